"""A TCP relay on the host's loopback that a test can switch off and on: the guest's
forward to the control plane goes through it, so "the control plane is unreachable" is a
refused connection as the guest sees one, while the control plane itself keeps running.

Down, it accepts and closes at once (the guest's TLS handshake sees the connection end);
connections already relayed carry on either way. Blocking, with one thread per direction.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class RelayLog:
    relayed: int = 0
    # host monotonic times of the connections turned away while down
    refused_at: list[float] = field(default_factory=list)


class _Pair:
    """A relayed connection: both sockets are closed when both directions are done."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.sockets = (a, b)
        self._left = 2
        self._lock = threading.Lock()

    def one_done(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left == 0

    def shut(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class Relay:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.log = RelayLog()
        self._up = threading.Event()
        self._up.set()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._listener.settimeout(0.5)  # the accept loop looks at _closing this often
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._open: set[_Pair] = set()
        self._acceptor = threading.Thread(target=self._accept, name="vm-relay", daemon=True)
        self._acceptor.start()

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    def up(self) -> None:
        self._up.set()

    def down(self) -> None:
        self._up.clear()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            if not self._up.is_set():
                self.log.refused_at.append(time.monotonic())
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            self.log.relayed += 1
            pair = _Pair(conn, upstream)
            with self._lock:
                self._open.add(pair)
            for source, sink in ((conn, upstream), (upstream, conn)):
                thread = threading.Thread(target=self._pump, args=(pair, source, sink), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(1 << 16):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            if pair.one_done():
                with self._lock:
                    self._open.discard(pair)
                pair.close()

    def close(self) -> None:
        self._closing.set()
        self._acceptor.join(timeout=10)
        self._listener.close()
        with self._lock:
            for pair in self._open:
                pair.shut()
        for thread in self._threads:
            thread.join(timeout=10)


@contextlib.contextmanager
def relay_to(upstream_port: int) -> Iterator[Relay]:
    relay = Relay(upstream_port)
    try:
        yield relay
    finally:
        relay.close()
