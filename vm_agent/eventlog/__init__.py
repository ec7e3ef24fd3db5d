"""The durable event log: per-session event streams in SQLite (WAL).

One file (`<state_dir>/events.sqlite3`, mode 0600, parent created 0700) holds
every session's events, the sessions registry and the outbox delivery
cursors; `<file>.lock` keeps a second process out.

- `EventLog.append` assigns the next per-session seq at once and returns the
  event when its batch has committed (group commit); `submit` is the
  pipelined form (`await handle.durable()` later). Durable means: survives a
  crash of the process (SIGKILL); with `synchronous="FULL"` also power loss.
- `read`/`read_payloads` page a session from any seq; `EventsDropped` says
  what retention (a byte budget per session, oldest dropped first) removed.
- `read_global` + delivery cursors are the outbox: retention never drops an
  event past the slowest registered cursor.
- `upsert_session`/`get_session`/`list_sessions`: what a restarted daemon
  needs (state, ACP session id, head seq).

May import common, core, jsonrpc.
"""

from .group_commit import Appended
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
    "Appended",
    "Event",
    "EventLog",
    "EventLogClosed",
    "EventLogError",
    "EventsDropped",
    "Listener",
    "SessionRecord",
]
