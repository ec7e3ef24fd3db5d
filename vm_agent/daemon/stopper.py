"""Signals to the daemon: the first SIGTERM/SIGINT asks for a clean stop, a second forces it."""

from __future__ import annotations

import logging
import os
import signal
import sys

import anyio
from anyio.abc import TaskStatus

from vm_agent.containment.host import Containment
from vm_agent.process.procgroup import signal_group
from vm_agent.session.supervisor import Supervisor

log = logging.getLogger(__name__)

# The exit status of a forced stop (the daemon's "failed").
EXIT_FORCED = 1


class Stopper:
    """The first SIGTERM/SIGINT asks for a clean stop; a second one forces the exit.

    `vm-agent dev` runs `watch` before it starts the control plane, so that a Ctrl-C at
    any moment takes this path (not asyncio's default of cancelling the main task).
    """

    def __init__(self) -> None:
        self.requested = anyio.Event()
        self.supervisor: Supervisor | None = None
        self.containment: Containment | None = None

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                if not self.requested.is_set():
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    self.requested.set()
                else:
                    self.force(signal.Signals(signum).name)

    def force(self, why: str) -> None:
        """Exits now; the agents' process groups are killed first so none is left behind."""
        log.warning("%s again: forcing the exit", why)
        if self.supervisor is not None:
            for session in list(self.supervisor.sessions.values()):
                pid = session.agent_pid
                if pid is not None:
                    signal_group(pid, signal.SIGKILL)
        if self.containment is not None:
            self.containment.kill_all_now()
            self.containment.close()  # what is still dying stays; the next start removes it
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(EXIT_FORCED)
