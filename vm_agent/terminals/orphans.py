"""After a restart: terminals a dead daemon left open are closed in the log.

Their shells ended with the daemon (they lived in its sessions' cgroups, or were killed
with its process groups); their history stays. A viewer that resumes reads, after the
last output, one ``terminal.exited`` with ``reason: "daemon restarted"``.
"""

from __future__ import annotations

from collections.abc import Iterable

from vm_agent.eventlog import Event, EventLog

TYPES = frozenset({"terminal.opened", "terminal.exited"})
_PAGE = 2000


def still_open(events: Iterable[Event]) -> list[tuple[str, str]]:
    """(session_id, terminal_id) opened and never exited, in opening order. Pure."""
    opened: dict[tuple[str, str], None] = {}
    for event in events:
        key = (event.session_id, str(event.data.get("terminal_id")))
        if event.type == "terminal.opened":
            opened[key] = None
        elif event.type == "terminal.exited":
            opened.pop(key, None)
    return list(opened)


async def close_orphans(log: EventLog) -> list[tuple[str, str]]:
    """Appends the ends the log lacks; returns which terminals they were."""
    events: list[Event] = []
    cursor = 0
    while True:
        page, cursor_next = await log.read_global(cursor, _PAGE, 16 * 1024 * 1024, TYPES)
        events += page
        if cursor_next == cursor or not page:
            break
        cursor = cursor_next
    orphans = still_open(events)
    for session_id, terminal_id in orphans:
        await log.append(
            session_id,
            "terminal.exited",
            {
                "terminal_id": terminal_id,
                "exit_code": None,
                "signal": None,
                "reason": "daemon restarted",
            },
        )
    return orphans
