"""Classifies an agent disconnect from facts, never from error text."""

from __future__ import annotations

import signal as signals
from dataclasses import dataclass

from vm_agent.core.vocabulary import STARTUP_METHODS, DisconnectClass


@dataclass(frozen=True, slots=True)
class ExitFacts:
    """How the process ended and what it was doing, as the shell observed it."""

    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool | None = None
    uptime_s: float = 0.0
    in_flight: str | None = None  # the last ACP method of ours still waiting for an answer

    def describe(self) -> str:
        if self.signal is not None:
            try:
                how = f"was killed by {signals.Signals(self.signal).name}"
            except ValueError:
                how = f"was killed by signal {self.signal}"
            if self.oom_killed:
                how += " (out of memory)"
        elif self.exit_code is not None:
            how = f"exited with code {self.exit_code}"
        else:
            how = "closed its output"
        return f"the agent {how} after {self.uptime_s:.1f}s"


@dataclass(frozen=True, slots=True)
class DisconnectFacts:
    exit: ExitFacts
    stop_requested: bool = False
    cancel_pending: bool = False
    deadline_passed: bool = False
    load_session_supported: bool = False
    acp_session_id_known: bool = False
    restarts_in_window: int = 0
    restart_budget: int = 3
    min_uptime_s: float = 3.0
    # The process was started by a recovery: dying soon after means the recovery failed.
    started_by_recovery: bool = False


@dataclass(frozen=True, slots=True)
class Classification:
    kind: DisconnectClass
    reason: str


def classify(f: DisconnectFacts) -> Classification:
    what = f.exit.describe()
    # Disconnects we caused come first: the agent did what we asked of it.
    if f.stop_requested:
        return Classification(DisconnectClass.CANCELLED, f"{what}; the session was stopped")
    if f.deadline_passed:
        return Classification(
            DisconnectClass.TIMEOUT, f"{what}; it was stopped because a deadline passed"
        )
    if f.cancel_pending:
        return Classification(
            DisconnectClass.CANCELLED, f"{what}; it was stopped after a cancel was asked for"
        )
    crashed = DisconnectClass.CRASHED
    if f.exit.in_flight in STARTUP_METHODS:
        return Classification(crashed, f"{what} during {f.exit.in_flight}")
    if f.started_by_recovery and f.exit.uptime_s < f.min_uptime_s:
        return Classification(
            crashed,
            f"{what}: within {f.min_uptime_s:g}s of being recovered, so recovery is not working",
        )
    if not f.load_session_supported:
        return Classification(crashed, f"{what}; the agent does not support session/load")
    if not f.acp_session_id_known:
        return Classification(crashed, f"{what} before an ACP session was opened")
    if f.restarts_in_window >= f.restart_budget:
        return Classification(
            crashed,
            f"{what}; the restart budget is spent ({f.restarts_in_window} recent restarts)",
        )
    return Classification(DisconnectClass.RESUMABLE, f"{what}; the session can be loaded again")
