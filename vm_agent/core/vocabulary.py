"""Names from the domain (docs/outcomes.md): states, outcomes, disconnect classes."""

from __future__ import annotations

from enum import StrEnum


class SessionState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    PROMPTING = "prompting"
    CANCELLING = "cancelling"
    RECOVERING = "recovering"
    ERROR = "error"
    STOPPED = "stopped"


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    RECOVERED = "recovered"
    CRASHED = "crashed"
    AUTH_REQUIRED = "auth_required"
    FAILED = "failed"


class DisconnectClass(StrEnum):
    RESUMABLE = "resumable"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


# ACP requests during which an agent dying means it cannot start, not that it crashed mid-work.
STARTUP_METHODS = frozenset(
    {"initialize", "authenticate", "session/new", "session/load", "session/resume"}
)
