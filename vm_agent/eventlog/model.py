"""Value types and errors of the event log (no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# The event types of docs/viewer-api.md. The log stores any type; this set is
# for callers that want to name them (e.g. the outbox filter).
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "session.state",
        "acp.update",
        "prompt.started",
        "prompt.finished",
        "permission.requested",
        "permission.resolved",
        "agent.crash_report",
        # a viewer changed the session's mode or a config option (vm_agent/session/agent_settings)
        "agent.settings_changed",
        # people's terminals (vm_agent/terminals)
        "terminal.opened",
        "terminal.output",
        "terminal.resized",
        "terminal.exited",
        # the ports a session's processes listen on (vm_agent/ports)
        "ports.changed",
    }
)


class Event(NamedTuple):
    """One stored event (a named tuple: cheap to build by the 100,000).

    `payload` is the exact JSON text of `{seq, session_id, ts, type, data}`,
    i.e. the `params` of the `session/event` notification; send it as is.
    `rowid` is the global append position (strictly increasing across all
    sessions, never reused), the unit of the outbox delivery cursor.
    """

    rowid: int
    session_id: str
    seq: int
    ts: float
    type: str
    payload: str

    def params(self) -> dict[str, Any]:
        """The payload parsed (a fresh dict each call)."""
        parsed: dict[str, Any] = json.loads(self.payload)
        return parsed

    @property
    def data(self) -> Any:
        return self.params()["data"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A row of the sessions registry, with the log's view of its events.

    `head_seq` is the last seq appended (0 when none) and `first_seq` the
    oldest seq still stored (head_seq + 1 when every event was dropped or none
    exists); both are read-only here and come from the log itself.
    """

    session_id: str
    agent: str
    cwd: str
    state: str
    acp_session_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    head_seq: int = 0
    first_seq: int = 1


class EventLogError(Exception):
    """Base class of the event log's errors."""


class EventLogClosed(EventLogError):
    """The log is closed (or its writer failed); nothing more is accepted."""


class EventsDropped(EventLogError):
    """Retention dropped events a reader asked for.

    Events `after_seq + 1 .. first_available_seq - 1` of `session_id` are gone
    (`dropped_count` of them). Read again with `after_seq=first_available_seq - 1`
    to continue from the oldest event still stored.
    """

    def __init__(self, session_id: str, after_seq: int, first_available_seq: int) -> None:
        self.session_id = session_id
        self.after_seq = after_seq
        self.first_available_seq = first_available_seq
        self.dropped_count = first_available_seq - 1 - after_seq
        super().__init__(
            f"session {session_id}: events {after_seq + 1}..{first_available_seq - 1} "
            f"were dropped by retention ({self.dropped_count} events); "
            f"oldest available is {first_available_seq}"
        )
