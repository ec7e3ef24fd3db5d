"""What a session's agent runs tell it (the ``RunReport`` of ``agent_run``), turned into facts
for its machine: a run opened its ACP session, could not start, or disconnected.

Each report is fed to the machine through the session's one ``feed``, so the events it
causes keep the machine's order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from vm_agent.acp.client import AgentInfo
from vm_agent.common.redact import Redactor
from vm_agent.core import events as ev
from vm_agent.core.classifier import ExitFacts
from vm_agent.core.machine import SessionMachine
from vm_agent.core.vocabulary import OutcomeKind, SessionState
from vm_agent.session.agent_run import AgentRun, StartFailure
from vm_agent.session.journal import SessionJournal
from vm_agent.session.traffic import Clock

# The session's feed: an event, and facts for the `session.state` event it may cause.
Feed = Callable[..., Awaitable[object]]


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
        now = self._clock()
        if self._machine.state is SessionState.RECOVERING:
            await self._feed(ev.RecoverySucceeded(now, acp_session_id, loaded=loaded))
        else:
            await self._feed(ev.AgentReady(now, acp_session_id, info.load_session, loaded=loaded))

    async def failed(self, failure: StartFailure) -> None:
        message = self._redactor.redact(failure.message)
        self.auth_methods = failure.auth_methods or self.auth_methods
        code, late = failure.error_code, failure.timed_out
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
