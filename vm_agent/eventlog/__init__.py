"""The durable event log: per-session event streams in SQLite (WAL).

One file (`<state_dir>/events.sqlite3`) holds every session's events, the
sessions registry and the outbox delivery cursors. See `log.EventLog`.
"""

from .log import DEFAULT_RETENTION_BYTES, EventLog, Listener
from .model import (
    EVENT_TYPES,
    Event,
    EventLogClosed,
    EventLogError,
    EventsDropped,
    SessionRecord,
)

__all__ = [
    "DEFAULT_RETENTION_BYTES",
    "EVENT_TYPES",
    "Event",
    "EventLog",
    "EventLogClosed",
    "EventLogError",
    "EventsDropped",
    "Listener",
    "SessionRecord",
]
