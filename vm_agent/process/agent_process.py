"""One agent process: spawned through a ``Launcher``, stderr drained, exit recorded.

Stopping it stops its whole tree: its process group (it leads its own session), or under
containment its cgroup, which a descendant cannot leave even with ``setsid``. Either way
grandchildren (Codex's native binary behind its Node wrapper) go too.
"""

from __future__ import annotations

import logging
import signal as signals
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE

import anyio
from anyio.abc import Process, TaskGroup

from vm_agent.jsonrpc.framing import DEFAULT_MAX_LINE_BYTES
from vm_agent.jsonrpc.transport import LineTransport
from vm_agent.process import oom
from vm_agent.process.launch import Launcher, PlainLauncher
from vm_agent.process.procgroup import PgidTree, ProcessTree, stop_tree
from vm_agent.process.stderr_tail import DEFAULT_TAIL_BYTES, StderrTail

log = logging.getLogger(__name__)


class AgentStartError(Exception):
    """The agent's command could not be started at all (missing binary, bad cwd...)."""


@dataclass(frozen=True, slots=True)
class ExitRecord:
    exit_code: int | None
    signal: int | None
    uptime_s: float
    oom_killed: bool | None  # None: the platform does not tell

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signals.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            how = f"killed by {name}" + (" (OOM killer)" if self.oom_killed else "")
        else:
            how = f"exited with code {self.exit_code}"
        return f"{how} after {self.uptime_s:.1f}s"


@dataclass(frozen=True, slots=True)
class StopTimings:
    stdin_grace_s: float = 1.0
    term_grace_s: float = 3.0


AGENT_LEAF = "agent"


class AgentProcess:
    def __init__(
        self,
        process: Process,
        *,
        max_line_bytes: int,
        tail_bytes: int,
        tree: ProcessTree | None = None,
    ) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.pid = process.pid
        self.pgid = process.pid  # leader of its own session and group
        self.tree: ProcessTree = tree or PgidTree(process.pid)
        self.transport = LineTransport(process.stdin, process.stdout, max_line_bytes=max_line_bytes)
        self.stderr = StderrTail(tail_bytes)
        self.exited = anyio.Event()
        self.stderr_done = anyio.Event()
        self.exit_record: ExitRecord | None = None
        self._started = time.monotonic()
        self._oom_before = self.tree.oom_kills()

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    async def _drain_stderr(self) -> None:
        # Always read: an agent that fills the pipe while nobody reads it blocks forever.
        assert self.process.stderr is not None
        try:
            async for chunk in self.process.stderr:
                self.stderr.write(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            self.stderr_done.set()

    async def settle_stderr(self, within_s: float = 0.5) -> None:
        """Waits briefly for the last stderr bytes of an exited agent (for its crash report)."""
        with anyio.move_on_after(within_s):
            await self.stderr_done.wait()

    async def _watch_exit(self) -> None:
        self._record_exit(await self.process.wait())

    def _record_exit(self, code: int) -> ExitRecord:
        if self.exit_record is not None:
            return self.exit_record
        sig = -code if code < 0 else None
        oom_killed = None
        if self._oom_before is not None:
            oom_killed = oom.was_oom_killed(sig, self._oom_before, self.tree.oom_kills())
        self.exit_record = record = ExitRecord(
            exit_code=None if sig is not None else code,
            signal=sig,
            uptime_s=self.uptime_s,
            oom_killed=oom_killed,
        )
        log.info("agent pid %d %s", self.pid, record.describe())
        self.exited.set()
        return record

    async def wait(self) -> ExitRecord:
        await self.exited.wait()
        assert self.exit_record is not None
        return self.exit_record

    async def stop(self, timings: StopTimings = StopTimings()) -> ExitRecord:
        """Close stdin, wait, SIGTERM the tree, wait, SIGKILL the tree; then the record."""
        with anyio.CancelScope(shield=True):
            await stop_tree(
                self.process,
                self.tree,
                close_stdin=True,
                stdin_grace_s=timings.stdin_grace_s,
                term_grace_s=timings.term_grace_s,
            )
            # Reap it here rather than wait for the watcher task, which a cancelled
            # scope may already have ended: the group is gone, so this returns at once.
            code = await self.process.wait()
        return self._record_exit(code)


@asynccontextmanager
async def spawn_agent(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    tail_bytes: int = DEFAULT_TAIL_BYTES,
    stop_timings: StopTimings = StopTimings(),
    launcher: Launcher | None = None,
) -> AsyncIterator[AgentProcess]:
    """Runs an agent for the body of the block; leaving it stops its whole process tree."""
    if not argv:
        raise AgentStartError("empty agent command")
    launcher = launcher or PlainLauncher()
    try:
        launched = await launcher.launch(
            argv, leaf=AGENT_LEAF, cwd=cwd, env=env, stdin_pipe=True, stderr=PIPE
        )
    except OSError as exc:
        raise AgentStartError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    process = launched.process
    agent = AgentProcess(
        process, max_line_bytes=max_line_bytes, tail_bytes=tail_bytes, tree=launched.tree
    )
    tg: TaskGroup
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent._drain_stderr)
        tg.start_soon(agent._watch_exit)
        try:
            yield agent
        finally:
            await agent.stop(stop_timings)
            with anyio.CancelScope(shield=True):
                await agent.settle_stderr()
                tg.cancel_scope.cancel()
                await process.aclose()
                launcher.forget(launched.leaf)
