"""Scripted stand-ins for a model provider's cloud API: the one fake real-agent tests need.

A ``Script`` holds the replies to give, in order, and records every request that came.
Each provider module (``anthropic_api``, ``openai_api``, ``gemini_api``) turns a ``Reply``
into that provider's streaming events and decides which requests are *turns* (the agent's
own model calls, which take the next scripted reply) and which are side calls (a routing
classifier, a title) that get a fixed answer.

The servers are real HTTP servers (Starlette on uvicorn) on loopback TCP, a Unix socket,
or both; ``serve`` runs one inside the caller's task group, ``main`` runs one as its own
process (``python -m tests.real_agents.anthropic_api --port N``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

from control_plane.serving import uvicorn_serving


@dataclass(frozen=True)
class ToolCall:
    """The model asks the agent to run one of the tools the agent offered."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    """The provider refuses the request, as its cloud does when it cannot serve it.

    ``status``: 529 (overloaded), 429 (rate limited), 503 (unavailable); each provider's
    stand-in gives it the body and the error type that provider uses for that status.
    ``retry_after``: seconds, sent as the ``retry-after`` header.
    """

    status: int
    retry_after: float | None = None

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": f"{self.retry_after:g}"}


OVERLOADED = Failure(529)
RATE_LIMITED = Failure(429, retry_after=1)


@dataclass(frozen=True)
class Reply:
    """One model answer: some text, then maybe a tool call; or the provider's refusal.

    ``hold``: stream the first piece of text, then keep the stream open without finishing
    until the script releases it (or the agent goes away): an answer still being written.
    ``fail``: no answer at all: the request is refused with that HTTP error.
    ``fail_mid``: the stream starts (200, the first piece of text), then the provider's
    error event ends it (the Anthropic stand-in: ``event: error`` with that status's error
    type, as its API sends one mid-stream).
    """

    text: str = ""
    tool: ToolCall | None = None
    hold: bool = False
    fail: Failure | None = None
    fail_mid: Failure | None = None

    def pieces(self, count: int = 3) -> list[str]:
        """The text in up to ``count`` pieces, as a stream of tokens would bring it."""
        if not self.text:
            return []
        size = max(1, -(-len(self.text) // count))
        return [self.text[i : i + size] for i in range(0, len(self.text), size)]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        tool, fail, mid = data.get("tool"), data.get("fail"), data.get("fail_mid")
        return cls(
            text=str(data.get("text", "")),
            tool=ToolCall(str(tool["name"]), dict(tool.get("arguments", {}))) if tool else None,
            hold=bool(data.get("hold", False)),
            fail=Failure(int(fail["status"]), fail.get("retry_after")) if fail else None,
            fail_mid=Failure(int(mid["status"]), mid.get("retry_after")) if mid else None,
        )


@dataclass
class Recorded:
    """A request as the agent sent it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw: bytes
    turn: bool = False  # it took a scripted reply
    aborted: bool = False  # the agent went away before the reply was finished
    index: int = 0

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def text(self) -> str:
        """The whole body as text: search it for what the agent sent the model."""
        return self.raw.decode("utf-8", "replace")

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "turn": self.turn,
            "headers": self.headers,
            "body": self.body,
        }


class Script:
    """The replies to give, in order, and every request, for tests to look at."""

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        default: Reply = Reply(text="(nothing more was scripted)"),
        on_request: Callable[[Recorded], None] | None = None,
    ) -> None:
        self._replies = deque(replies)
        self.default = default
        self.requests: list[Recorded] = []
        self._arrived = anyio.Event()
        self._released = anyio.Event()
        self._on_request = on_request

    def add(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies nobody has asked for yet."""
        return len(self._replies)

    def turns(self) -> list[Recorded]:
        return [r for r in self.requests if r.turn]

    def record(self, recorded: Recorded) -> Recorded:
        recorded.index = len(self.requests)
        self.requests.append(recorded)
        if self._on_request is not None:
            self._on_request(recorded)
        self._arrived.set()
        self._arrived = anyio.Event()
        return recorded

    def take(self) -> Reply:
        return self._replies.popleft() if self._replies else self.default

    async def wait_for_turns(self, count: int) -> list[Recorded]:
        """Waits until ``count`` turns have come (bound it with the caller's cancel scope)."""
        while len(self.turns()) < count:
            await self._arrived.wait()
        return self.turns()

    async def hold(self) -> None:
        """Where a held reply waits."""
        await self._released.wait()

    def release(self) -> None:
        """Lets every held reply (and any later one) finish."""
        self._released.set()


async def recorded_request(request: Request, script: Script, *, turn: bool) -> Recorded:
    raw = await request.body()
    return script.record(
        Recorded(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=dict(request.headers),
            raw=raw,
            turn=turn,
        )
    )


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# -- serving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    url: str | None  # http://127.0.0.1:PORT when served on TCP
    uds: Path | None  # the Unix socket, when served on one


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _unix_socket(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve(
    app: Starlette,
    script: Script,
    *,
    host: str | None = None,
    port: int = 0,
    uds: Path | None = None,
) -> AsyncIterator[Served]:
    """Serves ``app`` on loopback TCP (``host``), a Unix socket (``uds``), or both."""
    if host is not None and not _is_loopback(host):
        raise ValueError(f"a model stand-in serves on loopback only, not {host!r}")
    sockets = []
    url = None
    if host is not None:
        tcp = _tcp_socket(host, port)
        sockets.append(tcp)
        bound = tcp.getsockname()[1]
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    if uds is not None:
        sockets.append(_unix_socket(uds))
    if not sockets:
        raise ValueError("give a host, a Unix socket path, or both")
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=3)
    try:
        async with uvicorn_serving(config, sockets, "the model stand-in"):
            try:
                yield Served(url, uds)
            finally:
                script.release()  # held replies end, so the server can stop
    finally:
        for sock in sockets:
            sock.close()
        if uds is not None:
            uds.unlink(missing_ok=True)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


# -- as a process -----------------------------------------------------------------------------


def main(make_app: Callable[[Script], Starlette], argv: Sequence[str] | None = None) -> int:
    """``python -m tests.real_agents.<api> --port N [--script F] [--record F]``.

    Prints ``listening on URL`` (and the socket path) once it serves; stops on SIGTERM or
    SIGINT. The script file is a JSON list of replies (``{"text", "tool": {"name",
    "arguments"}, "hold", "fail": {"status", "retry_after"}}``); without one, every
    turn gets ``--text``.
    """
    parser = argparse.ArgumentParser(description="a scripted model API stand-in on loopback")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--uds", type=Path, help="also serve on this Unix socket")
    parser.add_argument("--script", type=Path, help="JSON list of replies, given in order")
    parser.add_argument("--text", default="Hello from the stand-in.", help="the default reply")
    parser.add_argument("--record", type=Path, help="append each request here as a JSON line")
    args = parser.parse_args(argv)
    replies = []
    if args.script is not None:
        replies = [Reply.from_json(item) for item in json.loads(args.script.read_text())]
    record = args.record.open("a") if args.record is not None else None

    def write(recorded: Recorded) -> None:
        if record is not None:
            record.write(json.dumps(recorded.to_json()) + "\n")
            record.flush()

    script = Script(replies, default=Reply(text=args.text), on_request=write)
    try:
        anyio.run(_serve_until_signalled, make_app(script), script, args)
    finally:
        if record is not None:
            record.close()
    return 0


async def _serve_until_signalled(app: Starlette, script: Script, args: argparse.Namespace) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with serve(app, script, host=args.host, port=args.port, uds=args.uds) as served:
            where = served.url or ""
            if served.uds is not None:
                where += f" unix:{served.uds}"
            print(f"listening on {where.strip()}", flush=True)
            async for _ in signals:
                break
    print("stopped", file=sys.stderr, flush=True)
