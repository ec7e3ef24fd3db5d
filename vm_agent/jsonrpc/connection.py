"""A JSON-RPC 2.0 peer over any ``Transport``: the one implementation for agents and viewers.

Ordering: frames are handled strictly in arrival order by one reader task. A notification
handler runs inline (an awaitable it returns is awaited before the next frame), so a
``session/update`` is handled before the one after it. A request handler is *called* inline
and the awaitable it returns runs in its own task, so a request that waits on a person
(a permission prompt) never stalls the stream behind it.

Bounded methods: a ``Router`` may give methods a shared ``anyio.Semaphore``. A request of
such a method holds a slot from before its handler starts until its answer is written,
and the reader waits for a free slot before it takes the next frame: a peer that sends many
requests with big answers (file reads) gets backpressure, and memory stays bounded.

A peer that goes away is a distinct, typed outcome (``PeerClosed``), never confused with a
caller's own deadline (``TimeoutError`` from its cancel scope) or an error answer
(``JsonRpcError``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from vm_agent.jsonrpc import messages as m
from vm_agent.jsonrpc.errors import INTERNAL_ERROR, JsonRpcError
from vm_agent.jsonrpc.framing import Oversize
from vm_agent.jsonrpc.transport import Transport, TransportClosed

log = logging.getLogger(__name__)

NotificationHandler = Callable[[Any], Awaitable[None] | None]
RequestHandler = Callable[[Any], Awaitable[Any]]


class PeerClosed(Exception):
    """The peer went away (end of stream, broken pipe) before the exchange completed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"peer closed: {reason}")
        self.reason = reason


@dataclass(slots=True)
class ConnectionStats:
    messages_in: int = 0
    messages_out: int = 0
    invalid_frames: int = 0
    oversize_frames: int = 0


@dataclass(slots=True)
class Router:
    """Maps method names to handlers; an unknown request method answers -32601."""

    requests: dict[str, RequestHandler] = field(default_factory=dict)
    notifications: dict[str, NotificationHandler] = field(default_factory=dict)
    # Methods whose requests are handled at most the semaphore's value at a time.
    bounded: dict[str, anyio.Semaphore] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    method: str
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: BaseException | None = None


ProtocolErrorHook = Callable[[str], None]
# What a peer learns of our own failure: no detail (that goes to our log).
_INTERNAL = JsonRpcError(INTERNAL_ERROR, "internal error")


class Connection:
    def __init__(
        self,
        transport: Transport,
        router: Router,
        *,
        name: str,
        answer_invalid: bool = False,
        on_protocol_error: ProtocolErrorHook | None = None,
    ) -> None:
        """``answer_invalid``: answer malformed frames with a JSON-RPC error (viewers) instead
        of logging and skipping them (agents, whose stdout may carry a shell profile's noise)."""
        self.name = name
        self._transport = transport
        self._router = router
        self._answer_invalid = answer_invalid
        self._on_protocol_error = on_protocol_error
        self._ids = itertools.count(1)
        self._pending: dict[m.RequestId, _Pending] = {}
        self._tg: TaskGroup | None = None
        self.stats = ConnectionStats()
        self.closed = anyio.Event()
        self.close_reason: str | None = None

    # -- outgoing ---------------------------------------------------------------------------

    async def request(
        self, method: str, params: Any = None, *, sent: anyio.Event | None = None
    ) -> Any:
        """Sends a request and waits for its answer. Bound it with the caller's cancel scope.

        ``sent`` is set once the request is written, for messages that must follow it.
        """
        if self.close_reason is not None:
            raise PeerClosed(self.close_reason)
        msg_id = next(self._ids)
        slot = _Pending(method)
        self._pending[msg_id] = slot
        try:
            await self._send(m.encode_request(msg_id, method, params))
            if sent is not None:
                sent.set()
            await slot.done.wait()
        finally:
            self._pending.pop(msg_id, None)
        if slot.error is not None:
            raise slot.error
        return slot.result

    async def notify(self, method: str, params: Any = None) -> None:
        await self._send(m.encode_notification(method, params))

    async def send_raw(self, message: bytes) -> None:
        """Sends an already-encoded message (fan-out shares one serialization per event)."""
        await self._send(message)

    def in_flight(self) -> list[str]:
        """Methods of our requests still waiting for an answer, oldest first."""
        return [p.method for p in self._pending.values()]

    async def _send(self, data: bytes) -> None:
        try:
            await self._transport.send(data)
        except TransportClosed as exc:
            self._mark_closed(str(exc))
            raise PeerClosed(self.close_reason or str(exc)) from exc
        self.stats.messages_out += 1

    # -- incoming ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reads and dispatches until the peer closes; returns then (never raises for it)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                await self._read_loop()
            finally:
                self._mark_closed(self.close_reason or "end of stream")
                # The peer is gone: answers we are still computing have nowhere to go.
                tg.cancel_scope.cancel()

    async def aclose(self) -> None:
        self._mark_closed("closed locally")
        await self._transport.aclose()

    async def _read_loop(self) -> None:
        while True:
            try:
                frame = await self._transport.receive()
            except TransportClosed as exc:
                self._mark_closed(str(exc))
                return
            if isinstance(frame, Oversize):
                self.stats.oversize_frames += 1
                self._protocol_error(
                    f"message of {frame.size} bytes is over the {frame.limit}-byte limit; discarded"
                )
                continue
            msg = m.parse(frame)
            self.stats.messages_in += 1
            if isinstance(msg, m.Invalid):
                await self._invalid(msg, frame)
                continue
            await self._dispatch(msg)

    async def _dispatch(self, msg: m.Message) -> None:
        if isinstance(msg, m.Notification):
            handler = self._router.notifications.get(msg.method)
            if handler is None:
                log.debug("%s: ignoring notification %s", self.name, msg.method)
                return
            try:
                pending = handler(msg.params)
                if pending is not None:
                    await pending
            except Exception:
                log.exception("%s: handler for %s failed", self.name, msg.method)
        elif isinstance(msg, m.Request):
            slots = self._router.bounded.get(msg.method)
            if slots is None:
                self._start_request(msg, None)
            else:
                await slots.acquire()
                self._start_request(msg, slots)
        elif isinstance(msg, m.Response):
            self._resolve(msg.id, result=msg.result)
        else:
            self._resolve(msg.id, error=msg.error)

    def _start_request(self, req: m.Request, slots: anyio.Semaphore | None) -> None:
        assert self._tg is not None
        handler = self._router.requests.get(req.method)
        if handler is None:
            self._tg.start_soon(
                self._answer_error, req.id, JsonRpcError.method_not_found(req.method), slots
            )
            return
        try:
            awaitable = handler(req.params)
        except JsonRpcError as exc:
            self._tg.start_soon(self._answer_error, req.id, exc, slots)
            return
        except Exception:
            log.exception("%s: handler for %s failed", self.name, req.method)
            self._tg.start_soon(
                self._answer_error, req.id, JsonRpcError(INTERNAL_ERROR, "internal error"), slots
            )
            return
        self._tg.start_soon(self._answer, req, awaitable, slots)

    async def _answer(
        self, req: m.Request, awaitable: Awaitable[Any], slots: anyio.Semaphore | None = None
    ) -> None:
        try:
            try:
                result = await awaitable
            except JsonRpcError as exc:
                await self._answer_error(req.id, exc)
                return
            except Exception:
                log.exception("%s: handler for %s failed", self.name, req.method)
                await self._answer_error(req.id, _INTERNAL)
                return
            with contextlib.suppress(PeerClosed):
                await self._send(m.encode_result(req.id, result))
        finally:
            if slots is not None:
                slots.release()

    async def _answer_error(
        self,
        msg_id: m.RequestId | None,
        error: JsonRpcError,
        slots: anyio.Semaphore | None = None,
    ) -> None:
        try:
            with contextlib.suppress(PeerClosed):
                await self._send(m.encode_error(msg_id, error))
        finally:
            if slots is not None:
                slots.release()

    async def _invalid(self, msg: m.Invalid, frame: bytes | str) -> None:
        self.stats.invalid_frames += 1
        preview = frame[:120] if isinstance(frame, str) else frame[:120].decode(errors="replace")
        self._protocol_error(f"{msg.error.message}; frame starts {preview!r}")
        if self._answer_invalid:
            await self._answer_error(msg.id, msg.error)

    def _protocol_error(self, what: str) -> None:
        log.warning("%s: %s", self.name, what)
        if self._on_protocol_error is not None:
            self._on_protocol_error(what)

    def _resolve(
        self, msg_id: m.RequestId | None, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        slot = self._pending.get(msg_id) if msg_id is not None else None
        if slot is None:
            log.warning("%s: answer for unknown request id %r", self.name, msg_id)
            return
        slot.result = result
        slot.error = error
        slot.done.set()

    def _mark_closed(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        for slot in self._pending.values():
            if not slot.done.is_set():
                slot.error = PeerClosed(self.close_reason)
                slot.done.set()
        self.closed.set()


def router(
    requests: Mapping[str, RequestHandler] | None = None,
    notifications: Mapping[str, NotificationHandler] | None = None,
    bounded: Mapping[str, anyio.Semaphore] | None = None,
) -> Router:
    return Router(dict(requests or {}), dict(notifications or {}), dict(bounded or {}))
