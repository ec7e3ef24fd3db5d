"""Facts the shell feeds the session machine. Every time is passed in (seconds, monotonic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vm_agent.core.classifier import ExitFacts


@dataclass(frozen=True, slots=True)
class AgentReady:
    """A process is up, initialized, and has an ACP session (new or loaded)."""

    now: float
    acp_session_id: str
    load_session: bool
    loaded: bool = False  # the session was loaded (session/load), not opened anew
    resume: bool = False  # the agent advertises session/resume (a retry may go to a new process)


@dataclass(frozen=True, slots=True)
class StartFailed:
    message: str
    error_code: int | None = None  # the agent refused with this JSON-RPC error
    timed_out: bool = False  # the start deadline passed (initialize, session/new or load)


@dataclass(frozen=True, slots=True)
class PromptRequested:
    now: float
    prompt_id: str


@dataclass(frozen=True, slots=True)
class AgentOutput:
    now: float


@dataclass(frozen=True, slots=True)
class PromptAnswered:
    now: float
    stop_reason: str
    # What this attempt of the prompt showed, to tell a cut answer (core/answers.py):
    streamed_text: bool = False  # a non-empty agent_message_chunk text came during it
    input_tokens: int | None = None  # the answer's usage (None: it reported none)
    output_tokens: int | None = None
    cost_rose: bool = False  # the agent's cumulative cost rose: a model request was billed
    tool_started: bool = False  # a tool_call update came during this attempt of the prompt
    random: float = 0.0  # a draw in [0, 1) for a retry's jitter (the machine has no dice)


@dataclass(frozen=True, slots=True)
class PromptErrored:
    now: float
    code: int
    message: str
    data: Any = None  # the error's ``data``, as the agent gave it (codex puts the detail here)
    tool_started: bool = False  # a tool_call update came during this attempt of the prompt
    random: float = 0.0  # a draw in [0, 1) for a retry's jitter (the machine has no dice)


@dataclass(frozen=True, slots=True)
class CancelRequested:
    now: float


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; the machine checks its deadlines against ``now``."""

    now: float


@dataclass(frozen=True, slots=True)
class Disconnected:
    now: float
    exit: ExitFacts


@dataclass(frozen=True, slots=True)
class RecoverySucceeded:
    now: float
    acp_session_id: str
    loaded: bool


@dataclass(frozen=True, slots=True)
class RecoveryFailed:
    now: float
    message: str
    retryable: bool  # the process died or hung (try again) vs the agent refused (do not)
    error_code: int | None = None  # the agent refused with this JSON-RPC error
    timed_out: bool = False  # the start deadline passed (initialize or session/load)


@dataclass(frozen=True, slots=True)
class StopRequested:
    now: float


@dataclass(frozen=True, slots=True)
class RecoverRequested:
    """Someone asks a stopped or failed session to come back (after a daemon restart)."""

    now: float


Event = (
    AgentReady
    | StartFailed
    | PromptRequested
    | AgentOutput
    | PromptAnswered
    | PromptErrored
    | CancelRequested
    | Tick
    | Disconnected
    | RecoverySucceeded
    | RecoveryFailed
    | StopRequested
    | RecoverRequested
)
