"""Session events to any number of viewers: replay from the log, then live, with no gap.

One log listener serves every viewer: it builds each event's ``session/event`` message once
(from the stored payload) and offers the same bytes to every subscriber of that session.
The listener never waits: a subscriber whose queue is full is closed by its transport.

A subscription replays from the log in pages at the viewer's own pace, then turns live in
the same step (no await) in which it sees it has sent everything up to the committed head;
the log calls listeners right after it moves that head, so every later event reaches the
subscription live. Seqs at or below the last one sent are skipped; a seq past the next one
expected (which should not happen) sends the subscription back to the log to fill the gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import anyio

from vm_agent.eventlog import Event, EventLog, EventsDropped
from vm_agent.server.transport import CLOSE_EVENTS_DROPPED, WebSocketTransport

log = logging.getLogger(__name__)

EVENT_PREFIX = b'{"jsonrpc":"2.0","method":"session/event","params":'
MAX_PAGE = 500


def event_frame(payload: str) -> bytes:
    """The ``session/event`` notification around a stored payload (no re-encoding)."""
    return EVENT_PREFIX + payload.encode() + b"}"


class Subscription:
    __slots__ = ("last_sent", "live", "resync", "session_id", "transport")

    def __init__(self, session_id: str, after_seq: int, transport: WebSocketTransport) -> None:
        self.session_id = session_id
        self.transport = transport
        self.last_sent = after_seq
        self.live = False
        self.resync = anyio.Event()

    def offer(self, seq: int, frame: bytes) -> None:
        """A committed event, from the log listener; never waits."""
        if not self.live or seq <= self.last_sent:
            return
        if self.transport.closing:
            self.live = False  # overflowed or leaving: nothing more to send
            return
        if seq != self.last_sent + 1:
            log.error(
                "session %s: live event %d after %d; filling the gap from the log",
                self.session_id,
                seq,
                self.last_sent,
            )
            self.live = False
            self.resync.set()
            return
        if self.transport.offer(frame):
            self.last_sent = seq


class FanOut:
    def __init__(self, log: EventLog, *, page_size: int = MAX_PAGE) -> None:
        self.log = log
        self.page_size = max(1, page_size)
        self._subs: dict[str, set[Subscription]] = {}
        self._remove_listener: Callable[[], None] | None = None

    def attach(self) -> Callable[[], None]:
        """Registers the one log listener; returns the function that removes it."""
        remove = self.log.add_listener(self._on_events)
        self._remove_listener = remove
        return remove

    def subscriber_count(self, session_id: str) -> int:
        return len(self._subs.get(session_id, ()))

    def _on_events(self, events: Sequence[Event]) -> None:
        subs_by_session = self._subs
        for event in events:
            subs = subs_by_session.get(event.session_id)
            if not subs:
                continue
            frame = event_frame(event.payload)  # once, for every viewer of the session
            for sub in tuple(subs):
                sub.offer(event.seq, frame)

    async def subscribe(
        self, session_id: str, after_seq: int, transport: WebSocketTransport
    ) -> tuple[Subscription, list[str]]:
        """Registers a subscription and reads its first page (raises ``EventsDropped``)."""
        sub = Subscription(session_id, after_seq, transport)
        self._subs.setdefault(session_id, set()).add(sub)
        page = min(self.page_size, max(1, transport.queue_limit // 2))
        try:
            first = await self.log.read_payloads(session_id, after_seq, page)
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub, first

    def unsubscribe(self, sub: Subscription) -> None:
        sub.live = False
        subs = self._subs.get(sub.session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.session_id]

    async def pump(self, sub: Subscription, first: list[str]) -> None:
        """Replays ``first`` and the rest of the log, then keeps the subscription live."""
        transport = sub.transport
        page = min(self.page_size, max(1, transport.queue_limit // 2))
        pending = first
        try:
            while not transport.closing:
                while True:
                    if not pending:
                        if sub.last_sent >= self.log.head_seq(sub.session_id):
                            break
                        pending = await self.log.read_payloads(sub.session_id, sub.last_sent, page)
                        if not pending:  # committed but not yet visible: look again
                            await anyio.sleep(0.005)
                        continue
                    await transport.wait_for_room(len(pending))
                    for payload in pending:
                        transport.offer(event_frame(payload))
                    sub.last_sent += len(pending)
                    pending = []
                # Caught up with the committed head: live from the very next commit.
                sub.live = True
                await sub.resync.wait()
                sub.resync = anyio.Event()
        except EventsDropped as exc:
            # Retention overtook a slow replay: the viewer must resubscribe from what is left.
            transport.request_close(
                CLOSE_EVENTS_DROPPED,
                f"events dropped: resume with after_seq {exc.first_available_seq - 1}",
            )
        except Exception as exc:  # TransportClosed (the viewer is going) and the like
            log.debug("subscription to %s ends: %r", sub.session_id, exc)
        finally:
            self.unsubscribe(sub)
