"""The viewer port's listening socket: admission at accept, before any TLS or HTTP work.

asyncio accepts by calling the listening socket's ``accept()``; ``GatedListener`` is a
socket whose ``accept()`` asks the ``Admission`` first and closes a refused connection at
once, so a flood costs an accept and a close, never a handshake. An admitted connection is
a ``_Tracked`` socket that gives its ticket back when asyncio closes it, however it ends;
one the admission evicts (the oldest unauthenticated) is shut down, so that asyncio sees
its end and closes it.

Out of descriptors (EMFILE/ENFILE), the listener sheds instead of stalling: it keeps one
spare descriptor, and when accept fails for want of one it frees the spare, accepts the
waiting connection and closes it, and takes the spare again (what nginx and libuv do), so
the backlog never fills with strangers while the daemon waits. Accept errors reach
``on_accept_error``, which logs them at a bounded rate.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, NoReturn

from vm_agent.server.admission import Admission, Admitted, Refusal, Ticket

log = logging.getLogger(__name__)

OnRefused = Callable[[Refusal, str], None]
OnEvicted = Callable[[str], None]  # the evicted connection's address group
OnAcceptError = Callable[[OSError, bool], None]  # the error, and whether one was shed
# Refusals handled in one call before the event loop gets a turn again.
_REFUSALS_PER_CALL = 64
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
_PAUSE_S = 1.0  # asyncio's own pause after such an error (ACCEPT_RETRY_DELAY)
_ASYNCIO_ACCEPT_ERROR = "socket.accept() out of system resource"


class _QuietAcceptErrors(logging.Filter):
    """asyncio logs each failed accept with a traceback; the gate logs them at a bounded
    rate instead (``on_accept_error``), so asyncio's lines for it are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ASYNCIO_ACCEPT_ERROR)


_QUIET = _QuietAcceptErrors()


def quiet_asyncio_accept_errors() -> None:
    logger = logging.getLogger("asyncio")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


class Gate:
    """Admission for the listening sockets, and the ticket of each open connection."""

    def __init__(
        self,
        admission: Admission,
        *,
        on_refused: OnRefused,
        on_accept_error: OnAcceptError,
        on_evicted: OnEvicted = lambda key: None,
    ) -> None:
        self.admission = admission
        self.on_refused = on_refused
        self.on_accept_error = on_accept_error
        self.on_evicted = on_evicted
        self._tickets: dict[int, Ticket] = {}
        self._sockets: dict[Ticket, _Tracked] = {}

    def ticket(self, fd: int) -> Ticket | None:
        """The ticket of the open connection with this descriptor."""
        return self._tickets.get(fd)

    def authenticated(self, fd: int) -> None:
        ticket = self._tickets.get(fd)
        if ticket is not None:
            self.admission.authenticated(ticket)

    def _admitted(self, fd: int, sock: _Tracked, admitted: Admitted) -> None:
        self._tickets[fd] = admitted.ticket
        self._sockets[admitted.ticket] = sock
        evicted = admitted.evicted
        if evicted is not None:
            victim = self._sockets.pop(evicted, None)
            if victim is not None:
                # Its transport sees the end of the stream and closes; its slot is free now.
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)
            self.on_evicted(evicted.key)

    def _closed(self, fd: int, ticket: Ticket) -> None:
        if self._tickets.get(fd) is ticket:
            del self._tickets[fd]
        self._sockets.pop(ticket, None)
        self.admission.release(ticket)

    def listen(self, host: str, port: int, backlog: int) -> GatedListener:
        """A bound, listening socket (raises OSError, e.g. the port is in use)."""
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = GatedListener(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and address[0] == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # both stacks
            try:
                sock.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
            sock.listen(backlog)
            sock.setblocking(False)
            sock.gate = self
            sock._keep_spare()
        except BaseException:
            sock.close()
            raise
        return sock


class _Tracked(socket.socket):
    """An admitted connection; closing it (asyncio does, whatever the end) frees its slot."""

    _gate: Gate | None = None
    _ticket: Ticket | None = None

    def close(self) -> None:
        self._give_back()
        super().close()

    def __del__(self) -> None:
        # Never reached while asyncio owns the socket (it always closes it); a safety net.
        self._give_back()
        finalize = getattr(super(), "__del__", None)
        if finalize is not None:
            finalize()

    def _give_back(self) -> None:
        gate, ticket = self._gate, self._ticket
        if gate is not None and ticket is not None:
            self._gate = self._ticket = None
            gate._closed(self.fileno(), ticket)


class _Shed(Enum):
    SHED = "shed"
    NOTHING_WAITING = "nothing waiting"
    NO_SPARE = "no spare"


class GatedListener(socket.socket):
    gate: Gate | None = None
    _spare: int = -1
    _paused_until: float = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        gate = self.gate
        if gate is None:
            return super().accept()
        refused = 0
        while True:
            try:
                fd, address = self._accept()  # type: ignore[attr-defined]
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                self._out_of_descriptors(exc)
            host = str(address[0]) if isinstance(address, tuple) else ""
            verdict = gate.admission.admit(host, time.monotonic())
            if isinstance(verdict, Refusal):
                os.close(fd)
                gate.on_refused(verdict, host)
                refused += 1
                if refused >= _REFUSALS_PER_CALL:
                    raise BlockingIOError(errno.EAGAIN, "refused a burst; the loop goes first")
                continue
            conn = _Tracked(self.family, self.type, self.proto, fileno=fd)
            conn._gate, conn._ticket = gate, verdict.ticket
            gate._admitted(fd, conn, verdict)
            self._keep_spare()
            return conn, address

    def _keep_spare(self) -> None:
        if self._spare < 0:
            try:
                self._spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._spare = -1

    def _out_of_descriptors(self, exc: OSError) -> NoReturn:
        """Sheds one waiting connection if it can; always ends this call of ``accept``."""
        assert self.gate is not None
        if time.monotonic() < self._paused_until:
            # asyncio stopped accepting after the EMFILE below and tries again in a second;
            # its loop over the backlog must not log and reschedule once per connection.
            raise BlockingIOError(errno.EAGAIN, "accepting is paused") from exc
        outcome = self._shed()
        if outcome is _Shed.NOTHING_WAITING:
            # Linux reports EMFILE before it looks for a connection: nobody was turned away.
            raise BlockingIOError(errno.EAGAIN, "no connection waiting") from exc
        self.gate.on_accept_error(exc, outcome is _Shed.SHED)
        if outcome is _Shed.SHED:
            raise BlockingIOError(errno.EAGAIN, "shed a connection") from exc
        self._paused_until = time.monotonic() + _PAUSE_S
        raise exc  # no spare: asyncio pauses accepting for a second and tries again

    def _shed(self) -> _Shed:
        """Frees the spare descriptor to accept one waiting connection and close it."""
        if self._spare < 0:
            self._keep_spare()
            return _Shed.NO_SPARE
        os.close(self._spare)
        self._spare = -1
        try:
            fd, _ = self._accept()  # type: ignore[attr-defined]
        except BlockingIOError:
            self._keep_spare()
            return _Shed.NOTHING_WAITING
        except OSError:
            self._keep_spare()
            return _Shed.NO_SPARE  # the freed descriptor went elsewhere meanwhile
        os.close(fd)
        self._keep_spare()
        return _Shed.SHED

    def close(self) -> None:
        if self._spare >= 0:
            os.close(self._spare)
            self._spare = -1
        super().close()
