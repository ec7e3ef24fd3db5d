"""What a session writes to the durable log: state changes (with the registry row that a
restarted daemon reads back), prompt starts and outcomes, crash reports.

Every write is awaited: an event is in the log before anyone sees it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vm_agent.common.redact import Redactor
from vm_agent.core import actions as a
from vm_agent.core.vocabulary import SessionState
from vm_agent.eventlog import EventLog
from vm_agent.session.crash_report import CrashReport, build_crash_report
from vm_agent.session.outcome import Outcome


class SessionJournal:
    def __init__(
        self, log: EventLog, session_id: str, agent: str, cwd: Path, redactor: Redactor
    ) -> None:
        self.log = log
        self.session_id = session_id
        self.agent = agent
        self.cwd = cwd
        self.redactor = redactor
        self.crash_reports: list[CrashReport] = []
        # The stderr tail (and whether it was cut) of the process that went away last: the
        # crash report that follows carries it.
        self.crashed_stderr: tuple[str, bool] = ("", False)

    async def state(
        self,
        state: SessionState,
        note: str | None,
        *,
        acp_session_id: str | None,
        metadata: Mapping[str, Any],
        extra: Mapping[str, Any],
    ) -> None:
        data: dict[str, Any] = {"state": state.value, "note": note, **extra}
        if acp_session_id:
            data["acp_session_id"] = acp_session_id
        await self.log.append(self.session_id, "session.state", data)
        await self.log.upsert_session(
            self.session_id,
            agent=self.agent,
            cwd=str(self.cwd),
            state=state.value,
            acp_session_id=acp_session_id,
            metadata=metadata,
        )

    async def prompt_started(self, prompt_id: str, prompt: list[dict[str, Any]]) -> None:
        await self.log.append(
            self.session_id, "prompt.started", {"prompt_id": prompt_id, "prompt": prompt}
        )

    async def prompt_retry(self, act: a.RetryPrompt) -> None:
        """A transient provider error or a cut answer: the prompt is sent again after
        ``delay_s``."""
        data: dict[str, Any] = {
            "prompt_id": act.prompt_id,
            "attempt": act.attempt,
            "delay_s": round(act.delay_s, 3),
            "reason": act.reason,
        }
        if act.error_code is not None:  # a cut answer was no error
            data["error_code"] = act.error_code
            data["message"] = self.redactor.redact(act.message)
        if act.retry_after_s is not None:
            data["retry_after_s"] = act.retry_after_s
        await self.log.append(self.session_id, "prompt.retry", data)

    async def outcome(self, outcome: Outcome) -> None:
        await self.log.append(self.session_id, "prompt.finished", outcome.to_json())

    async def crash_report(self, act: a.EmitCrashReport) -> None:
        tail, cut = self.crashed_stderr
        report = build_crash_report(
            act,
            session_id=self.session_id,
            agent=self.agent,
            stderr_tail=tail,
            stderr_cut=cut,
            redactor=self.redactor,
            ts=time.time(),
        )
        self.crash_reports.append(report)
        await self.log.append(self.session_id, "agent.crash_report", report.to_json())
