"""What a session's agent runs tell it (the ``RunReport`` of ``agent_run``), turned into facts
for its machine: a run opened its ACP session, could not start, or disconnected.

Each report is fed to the machine through the session's one ``feed``, so the events it
causes keep the machine's order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from vm_agent.acp.client import AgentInfo
from vm_agent.common.redact import Redactor
from vm_agent.core import events as ev
from vm_agent.core.classifier import ExitFacts
from vm_agent.core.machine import SessionMachine
from vm_agent.core.vocabulary import OutcomeKind, SessionState
from vm_agent.jsonrpc.connection import PeerClosed
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.session.agent_run import AgentRun, StartFailure
from vm_agent.session.journal import SessionJournal
from vm_agent.session.traffic import Clock

log = logging.getLogger(__name__)

# The session's feed: an event, and facts for the `session.state` event it may cause.
Feed = Callable[..., Awaitable[object]]
SETTINGS_EVENT = "agent.settings_changed"
# How long a recovered process may take over each mode or config change it is given again.
REAPPLY_TIMEOUT_S = 10.0


class RunReports:
    def __init__(
        self,
        machine: SessionMachine,
        journal: SessionJournal,
        redactor: Redactor,
        clock: Clock,
        feed: Feed,
    ) -> None:
        self._machine = machine
        self._journal = journal
        self._redactor = redactor
        self._clock = clock
        self._feed = feed
        self.auth_methods: tuple[dict[str, Any], ...] = ()  # as the last agent advertised
        # The last mode and each config option's last value viewers set (agent_settings),
        # by (method, what): a process that takes the session up again starts in the
        # agent's defaults, so a recovery sets them again before the session takes prompts.
        self.changes: dict[tuple[str, str], dict[str, Any]] = {}
        # Why the agent could not take the start's settings (agentSettings): the start is
        # then refused as a whole (session/start answers an error, the session is dropped).
        self.settings_refusal: str | None = None

    def auth_fields(self) -> dict[str, Any]:
        """What the agent advertised, while the session is in error for want of it."""
        machine = self._machine
        if (
            machine.state is SessionState.ERROR
            and machine.error_outcome is OutcomeKind.AUTH_REQUIRED
        ):
            return {"auth_methods": list(self.auth_methods)}
        return {}

    async def opened(
        self, run: AgentRun, info: AgentInfo, acp_session_id: str, loaded: bool
    ) -> None:
        self.auth_methods = info.auth_methods
        if self._machine.state is SessionState.RECOVERING:
            await self._reapply(run, acp_session_id)
            now = self._clock()
            await self._feed(ev.RecoverySucceeded(now, acp_session_id, loaded=loaded))
        else:
            for change in run.applied:  # as a viewer's change is recorded, by "start"
                data = {"method": change.method, "params": change.params, "by": "start"}
                await self._journal.log.append(run.session_id, SETTINGS_EVENT, data)
            now = self._clock()
            await self._feed(
                ev.AgentReady(
                    now,
                    acp_session_id,
                    info.load_session,
                    loaded=loaded,
                    resume=info.resume_session,
                )
            )

    async def _reapply(self, run: AgentRun, acp_session_id: str) -> None:
        client = run.client
        if client is None:
            return
        for (method, _), change in list(self.changes.items()):
            try:
                with anyio.fail_after(REAPPLY_TIMEOUT_S):
                    if method == "session/set_mode":
                        await client.set_mode(acp_session_id, str(change["modeId"]))
                    else:
                        await client.set_config_option(acp_session_id, change)
            except (JsonRpcError, PeerClosed, TimeoutError) as exc:
                # The session goes on in the agent's default; viewers can set it again.
                log.warning("session %s: %s not re-applied: %s", run.session_id, method, exc)

    async def failed(self, failure: StartFailure) -> None:
        message = self._redactor.redact(failure.message)
        self.auth_methods = failure.auth_methods or self.auth_methods
        code, late = failure.error_code, failure.timed_out
        if failure.settings_refused and self._machine.state is SessionState.STARTING:
            self.settings_refusal = message
        if self._machine.state is SessionState.RECOVERING:
            if failure.stderr_tail:
                self._journal.crashed_stderr = (failure.stderr_tail, False)
            await self._feed(
                ev.RecoveryFailed(self._clock(), message, failure.retryable, code, late)
            )
            return
        tail = self._redactor.redact(failure.stderr_tail)
        await self._feed(ev.StartFailed(message, code, late), stderr_tail=tail)

    async def disconnected(self, run: AgentRun, exit: ExitFacts) -> None:
        if run.process is not None:
            self._journal.crashed_stderr = (run.process.stderr.text(), run.process.stderr.cut)
        await self._feed(ev.Disconnected(self._clock(), exit))
