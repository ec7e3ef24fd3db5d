"""Crash reports: what a person needs to act on an agent that went away."""

from __future__ import annotations

import signal as signals
from typing import Any

from pydantic import BaseModel, ConfigDict

from vm_agent.common.redact import Redactor
from vm_agent.core.actions import EmitCrashReport


class CrashReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    session_id: str
    agent: str
    classification: str
    reason: str
    recovered: bool
    recovery_error: str | None
    exit_code: int | None
    signal: int | None
    signal_name: str | None
    oom_killed: bool | None
    uptime_s: float
    last_method: str | None
    stderr_tail: str
    stderr_cut: bool
    message: str
    ts: float

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def build_crash_report(
    act: EmitCrashReport,
    *,
    session_id: str,
    agent: str,
    stderr_tail: str,
    stderr_cut: bool,
    redactor: Redactor,
    ts: float,
) -> CrashReport:
    ex = act.exit
    name = None
    if ex.signal is not None:
        try:
            name = signals.Signals(ex.signal).name
        except ValueError:
            name = None
    reason = redactor.redact(act.classification.reason)
    recovery_error = redactor.redact(act.recovery_error) if act.recovery_error else None
    if act.recovered:
        message = (
            f"The {agent} agent went away ({reason}). A new process loaded the session; "
            "it is ready again. The prompt that was running ended as 'recovered': "
            "send it again if its answer was cut short."
        )
    else:
        message = (
            f"The {agent} agent crashed and the session could not be recovered: {reason}. "
            "Read the stderr tail below for the agent's own words; start a new session "
            "(or fix the agent's setup) to go on."
        )
    return CrashReport(
        session_id=session_id,
        agent=agent,
        classification=act.classification.kind.value,
        reason=reason,
        recovered=act.recovered,
        recovery_error=recovery_error,
        exit_code=ex.exit_code,
        signal=ex.signal,
        signal_name=name,
        oom_killed=ex.oom_killed,
        uptime_s=round(ex.uptime_s, 3),
        last_method=ex.in_flight,
        stderr_tail=redactor.redact(stderr_tail),
        stderr_cut=stderr_cut,
        message=message,
        ts=ts,
    )
