"""Decisions the session machine hands the shell to carry out, in order."""

from __future__ import annotations

from dataclasses import dataclass

from vm_agent.core.classifier import Classification, ExitFacts
from vm_agent.core.vocabulary import OutcomeKind, SessionState


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: SessionState
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    """The request is refused as it stands; tell the asker why."""

    reason: str


@dataclass(frozen=True, slots=True)
class SendPrompt:
    """The prompt is running: log its start and send it (``send`` False: its first send is
    a ``ResendPrompt`` once a new process is up)."""

    prompt_id: str
    send: bool = True


@dataclass(frozen=True, slots=True)
class RetryPrompt:
    """The prompt failed with a transient provider error, or its answer was cut: it is sent
    again (``ResendPrompt``) after ``delay_s``, as attempt number ``attempt``. Tell the
    viewers. ``error_code`` and ``message``: the agent's error (None and empty for a cut
    answer, which was none)."""

    prompt_id: str
    attempt: int
    delay_s: float
    reason: str
    error_code: int | None
    message: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class ResendPrompt:
    """Send the running prompt's content again (its backoff is over)."""

    prompt_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class SendCancel:
    """Send ``session/cancel`` and answer pending permission requests with ``cancelled``."""


@dataclass(frozen=True, slots=True)
class StopAgent:
    reason: str


@dataclass(frozen=True, slots=True)
class Restart:
    """Start a new process after ``delay_s``; load the ACP session when ``load`` is set."""

    delay_s: float
    load: bool
    attempt: int
    why: str


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    prompt_id: str
    outcome: OutcomeKind
    stop_reason: str | None = None
    reason: str | None = None
    error_code: int | None = None


@dataclass(frozen=True, slots=True)
class EmitCrashReport:
    classification: Classification
    exit: ExitFacts
    recovered: bool
    recovery_error: str | None


Action = (
    StateChanged
    | Refuse
    | SendPrompt
    | RetryPrompt
    | ResendPrompt
    | SendCancel
    | StopAgent
    | Restart
    | RecordOutcome
    | EmitCrashReport
)
