"""``vm-agent attach --terminal``: a person's terminal in a session's workspace, from here.

The local terminal goes raw; keys go to ``terminal/input``, the window's size to
``terminal/resize`` (at the start and on SIGWINCH), and the terminal's output events are
written as they come. Ctrl-] detaches and leaves the shell running (``--terminal ID``
attaches again). On (re)attaching the screen is painted from ``terminal/snapshot`` and the
output follows from the seq the snapshot holds, so a dropped connection shows nothing
twice and skips nothing. It ends when the shell ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import ssl
import sys
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from vm_agent.cli.viewer_client import MAX_FRAME, ClientTransport, Unauthorized
from vm_agent.jsonrpc.connection import Connection, PeerClosed, router
from vm_agent.jsonrpc.errors import JsonRpcError

EXIT_OK, EXIT_FAILED = 0, 1
DETACH = b"\x1d"  # Ctrl-]
NEW = "new"
_RETRYABLE = (OSError, InvalidHandshake, PeerClosed, ConnectionClosed, TimeoutError)
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.5, 10.0
_READ = 4096


@dataclass
class _Term:
    url: str
    token: str
    session_id: str
    terminal_id: str | None
    tls: ssl.SSLContext | None
    stdin: int = 0
    stdout: int = 1
    last_seq: int = 0
    ended: dict[str, Any] | None = None
    detached: bool = False
    connections: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)

    def out(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.stdout, view) :]

    def on_event(self, params: Any) -> None:
        if not isinstance(params, dict) or params.get("session_id") != self.session_id:
            return
        seq = params.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return
        self.last_seq = seq
        data = params.get("data") or {}
        if data.get("terminal_id") != self.terminal_id:
            return
        if params.get("type") == "terminal.output":
            self.out(str(data.get("data", "")).encode("utf-8", "replace"))
        elif params.get("type") == "terminal.exited":
            self.ended = data
            self.done.set()


def size() -> tuple[int, int]:
    try:
        cols, rows = os.get_terminal_size(sys.stdin.fileno())
    except OSError:
        return 80, 24
    return max(2, cols), max(2, rows)


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The local terminal passes every key on (and is put back as it was)."""
    if not os.isatty(fd):
        yield
        return
    before = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # keys typed ahead are kept
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, before)


def run(args: argparse.Namespace, token: str, tls: ssl.SSLContext | None) -> int:
    if args.session is None:
        print("vm-agent attach: --terminal needs --session", file=sys.stderr)
        return 2
    term = _Term(
        url=args.url,
        token=token,
        session_id=args.session,
        terminal_id=None if args.terminal == NEW else args.terminal,
        tls=tls,
    )
    with raw_mode(term.stdin):
        code = anyio.run(_main, term)
    if term.detached:
        print(
            f"\r\n-- detached; attach again with --terminal {term.terminal_id}",
            file=sys.stderr,
            flush=True,
        )
    elif term.ended is not None:
        print(f"\r\n-- the terminal ended ({term.ended.get('reason')})", file=sys.stderr)
    return code


async def _main(term: _Term) -> int:
    delay = _BACKOFF_FIRST_S
    while True:
        try:
            return await _one_connection(term)
        except Exception as exc:
            leaf: BaseException = exc
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if isinstance(leaf, (Unauthorized, JsonRpcError)) or not isinstance(leaf, _RETRYABLE):
                message = leaf.message if isinstance(leaf, JsonRpcError) else str(leaf)
                print(f"\r\nvm-agent attach: {message}", file=sys.stderr, flush=True)
                return EXIT_FAILED
            if term.connections == 0:
                print(f"vm-agent attach: cannot connect: {leaf}", file=sys.stderr, flush=True)
                return EXIT_FAILED
            print(f"\r\n-- disconnected ({leaf}); reconnecting\r", file=sys.stderr, flush=True)
        await anyio.sleep(delay)
        delay = min(_BACKOFF_MAX_S, delay * 2)


async def _one_connection(term: _Term) -> int:
    tls: dict[str, Any] = {} if term.tls is None else {"ssl": term.tls}
    headers = {"Authorization": f"Bearer {term.token}"}
    try:
        ws = await connect(
            term.url, additional_headers=headers, max_size=MAX_FRAME, proxy=None, **tls
        )
    except InvalidStatus as exc:
        if exc.response.status_code in (401, 403):
            raise Unauthorized(f"HTTP {exc.response.status_code}") from exc
        raise
    term.connections += 1
    transport = ClientTransport(ws)
    conn = Connection(
        transport, router(notifications={"session/event": term.on_event}), name="daemon"
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(conn.run)
            await _attach(term, conn)
            tg.start_soon(_keys, term, conn)
            tg.start_soon(_resizes, term, conn)

            async def closed() -> None:
                await conn.closed.wait()
                term.done.set()

            tg.start_soon(closed)
            await term.done.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await transport.aclose()
    if term.ended is None and not term.detached:
        raise PeerClosed(conn.close_reason or "closed")
    return EXIT_OK


async def _attach(term: _Term, conn: Connection) -> None:
    cols, rows = size()
    ids = {"session_id": term.session_id}
    if term.terminal_id is None:
        snap = await conn.request("terminal/open", {**ids, "cols": cols, "rows": rows})
        term.terminal_id = str(snap["terminal_id"])
    else:
        snap = await conn.request("terminal/snapshot", {**ids, "terminal_id": term.terminal_id})
    if term.last_seq == 0 or snap["seq"] > term.last_seq:
        # First attach, or output was missed while away: paint the screen as it is now.
        term.out(str(snap["screen"]["ansi"]).encode())
        term.last_seq = int(snap["seq"])
    if snap.get("exit") is not None:
        term.ended = snap["exit"]
        term.done.set()
        return
    await conn.request("session/subscribe", {**ids, "after_seq": term.last_seq})
    await conn.request(
        "terminal/resize", {**ids, "terminal_id": term.terminal_id, "cols": cols, "rows": rows}
    )


async def _keys(term: _Term, conn: Connection) -> None:
    while True:
        await anyio.wait_readable(term.stdin)
        data = os.read(term.stdin, _READ)
        if not data:  # end of input: leave the shell running, as a detach does
            term.detached = True
            term.done.set()
            return
        if DETACH in data:
            data = data[: data.index(DETACH)]
            term.detached = True
        if data:
            params = {
                "session_id": term.session_id,
                "terminal_id": term.terminal_id,
                "data": data.decode("utf-8", "replace"),
            }
            try:
                await conn.request("terminal/input", params)
            except JsonRpcError as exc:  # too fast or too much: say so, keep the terminal
                print(f"\r\n-- input refused: {exc.message}\r", file=sys.stderr, flush=True)
        if term.detached:
            term.done.set()
            return


async def _resizes(term: _Term, conn: Connection) -> None:
    with anyio.open_signal_receiver(signal.SIGWINCH) as signals:
        async for _ in signals:
            cols, rows = size()
            params = {
                "session_id": term.session_id,
                "terminal_id": term.terminal_id,
                "cols": cols,
                "rows": rows,
            }
            with contextlib.suppress(JsonRpcError):
                await conn.request("terminal/resize", params)
