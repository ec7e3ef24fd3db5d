"""Each session's listening ports, compared on a cadence and logged when they change."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from vm_agent.containment.session import SessionContainment
from vm_agent.eventlog import EventLog
from vm_agent.ports.scan import listening, ports_of

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
TYPES = frozenset({"ports.changed"})
Ports = list[dict[str, Any]]
Sessions = Callable[[], Iterable[tuple[str, SessionContainment | None]]]


def changes(last: Mapping[str, Ports], now: Mapping[str, Ports]) -> list[tuple[str, Ports]]:
    """What to report: a session whose set differs from the last report (none at first:
    the empty set). Pure."""
    return [(sid, ports) for sid, ports in now.items() if last.get(sid, []) != ports]


class PortWatch:
    def __init__(self, sessions: Sessions, log: EventLog) -> None:
        self.sessions = sessions
        self.log = log
        self.last: dict[str, Ports] = {}

    async def load_last(self) -> None:
        """What the log last said of each session (a restarted daemon then reports a server
        that died with the last one as gone, rather than leaving the log's word stale)."""
        cursor = 0
        while True:
            page, nxt = await self.log.read_global(cursor, 2000, 16 * 1024 * 1024, TYPES)
            for event in page:
                self.last[event.session_id] = list(event.data.get("ports") or [])
            if not page or nxt == cursor:
                return
            cursor = nxt

    async def scan_once(self) -> list[tuple[str, Ports]]:
        sessions = list(self.sessions())

        def scan() -> dict[str, tuple[Ports, str | None]]:
            sockets = listening()  # once for every session
            return {sid: ports_of(contained, sockets) for sid, contained in sessions}

        now: dict[str, Ports] = {}
        how: dict[str, str] = {}
        for sid, (ports, by) in (await anyio.to_thread.run_sync(scan)).items():
            if by is not None:
                now[sid], how[sid] = ports, by
        reported = changes(self.last, now)
        for sid, ports in reported:
            await self.log.append(sid, "ports.changed", {"ports": ports, "by": how[sid]})
        self.last = {sid: ports for sid, ports in now.items()}
        return reported

    async def run(self, interval_s: float = INTERVAL_S) -> None:
        await self.load_last()
        while True:
            try:
                await self.scan_once()
            except Exception:
                log.exception("the ports scan failed; trying again")
            await anyio.sleep(interval_s)
