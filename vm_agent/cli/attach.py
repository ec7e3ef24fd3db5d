"""``vm-agent attach``: a tiny terminal viewer of the daemon's websocket API.

It streams one session's events (human text or JSON lines), can start a session and send
one prompt, and resumes from the last seq it printed when the connection drops: the
daemon replays from there, so nothing is shown twice or skipped. It speaks JSON-RPC with
the daemon's own ``Connection`` over a websocket client transport.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from vm_agent.cli.render import HumanRenderer
from vm_agent.cli.viewer_client import CLOSE_UNAUTHORIZED, MAX_FRAME, TOKEN_ENV
from vm_agent.cli.viewer_client import ClientTransport as _ClientTransport
from vm_agent.cli.viewer_client import Unauthorized as _Unauthorized
from vm_agent.cli.viewer_client import tls_context as _tls_context
from vm_agent.jsonrpc.connection import Connection, PeerClosed, router
from vm_agent.jsonrpc.errors import JsonRpcError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_SETTLED_WAIT_S = 120.0
# After the prompt's answer, how long to wait for its prompt.finished event to be shown.
_FINISHED_EVENT_WAIT_S = 5.0
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.5, 10.0
_UNSETTLED = ("starting", "recovering")
_RETRYABLE = (OSError, InvalidHandshake, PeerClosed, ConnectionClosed, TimeoutError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", required=True, help="the viewer URL: wss://HOST:8080/v1/ws, or ws:// on loopback"
    )
    p.add_argument("--token", help=f"a viewer token (default: ${TOKEN_ENV})")
    p.add_argument(
        "--ca-file",
        type=Path,
        help="with a wss:// URL: trust the daemon's certificate if this CA (PEM) signed it "
        "(default: the system's CAs)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--session", help="the session to attach to")
    which.add_argument("--start", metavar="AGENT", help="start a session of this catalog agent")
    p.add_argument("--cwd", type=Path, help="the new session's working directory (with --start)")
    p.add_argument(
        "--session-id",
        help="with --start: the id to start it under, e.g. the one the control plane made with "
        "POST /api/nodes/NODE/sessions (an agent's credentials come only for such a session)",
    )
    p.add_argument("--after-seq", type=int, default=0, help="show events after this seq")
    p.add_argument(
        "--recover",
        action="store_true",
        help="with --session: load a stopped session in a new agent process first",
    )
    p.add_argument("--prompt", help="send this prompt; exit after its outcome (0 if completed)")
    p.add_argument(
        "--permission",
        choices=("allow", "reject"),
        help="answer the agent's permission requests this way (default: only show them)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument(
        "--terminal",
        nargs="?",
        const="new",
        metavar="ID",
        help="with --session: open a shell in its workspace (or attach to terminal ID); "
        "Ctrl-] detaches",
    )
    p.add_argument(
        "--forward",
        metavar="[LOCAL:]PORT",
        help="with --session: serve PORT of the session (its dev server) on 127.0.0.1:LOCAL",
    )


@dataclass
class _Attach:
    args: argparse.Namespace
    token: str
    session_id: str | None
    last_seq: int
    tls: ssl.SSLContext | None = None
    prompt_id: str = field(default_factory=lambda: f"attach-{uuid.uuid4().hex}")
    renderer: HumanRenderer = field(default_factory=HumanRenderer)
    started: bool = False
    state: str | None = None
    state_changed: anyio.Event = field(default_factory=anyio.Event)
    finished_seen: anyio.Event = field(default_factory=anyio.Event)
    outcome: dict[str, Any] | None = None
    cancel_asked: anyio.Event = field(default_factory=anyio.Event)
    # Set once the outcome is printed: an event still in flight must not follow it.
    finished: bool = False
    permission_requests: list[dict[str, Any]] = field(default_factory=list)
    permission_asked: anyio.Event = field(default_factory=anyio.Event)
    connections: int = 0  # websocket handshakes that succeeded

    def on_event(self, params: Any) -> None:
        if self.finished or not isinstance(params, dict):
            return
        if params.get("session_id") != self.session_id:
            return
        seq = params.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return  # a replay overlapping what was shown already
        self.last_seq = seq
        if self.args.json:
            print(json.dumps(params), flush=True)
        else:
            self.renderer.event(params)
        data = params.get("data") or {}
        if params.get("type") == "session.state":
            self._set_state(str(data.get("state")))
        elif params.get("type") == "prompt.finished" and data.get("prompt_id") == self.prompt_id:
            self.finished_seen.set()
        elif params.get("type") == "permission.requested" and self.args.permission:
            # Answered from a task: a handler waiting for an answer here would stall the reader.
            self.permission_requests.append(data)
            self.permission_asked.set()

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.set()
        self.state_changed = anyio.Event()

    async def session(self, conn: Connection) -> bool:
        """Makes sure the session exists; False when there is none to attach to."""
        if self.session_id is None and self.args.start is None:
            listing = await conn.request("session/list", {})
            self._print_list(listing.get("sessions", []))
            return False
        if self.session_id is None:
            self.session_id = f"attach-{uuid.uuid4().hex[:12]}"  # ours: a retried start is safe
        known = await conn.request("session/list", {})
        mine = [s for s in known.get("sessions", []) if s.get("session_id") == self.session_id]
        if mine:
            self._set_state(str(mine[0].get("state")))
            if self.args.recover and self.state in ("stopped", "error"):
                described = await conn.request("session/recover", {"session_id": self.session_id})
                self._set_state(str(described.get("state")))
        elif self.args.start is not None and not self.started:
            cwd = (self.args.cwd or Path.cwd()).resolve()
            params = {"agent": self.args.start, "cwd": str(cwd), "session_id": self.session_id}
            described = await conn.request("session/start", params)
            self.started = True
            self._set_state(str(described.get("state")))
            print(f"-- session {self.session_id}", file=sys.stderr, flush=True)
        else:
            raise JsonRpcError(-32002, f"unknown session {self.session_id!r}")
        return True

    def _print_list(self, sessions: list[dict[str, Any]]) -> None:
        if self.args.json:
            for s in sessions:
                print(json.dumps(s), flush=True)
            return
        if not sessions:
            print("no sessions", flush=True)
        for s in sessions:
            print(
                f"{s.get('session_id')}  {s.get('agent')}  {s.get('state')}  "
                f"head_seq={s.get('head_seq')}  {s.get('cwd')}",
                flush=True,
            )

    async def prompt(self, conn: Connection) -> dict[str, Any]:
        with anyio.fail_after(_SETTLED_WAIT_S):
            while self.state in (None, *_UNSETTLED):
                await self.state_changed.wait()
        blocks = [{"type": "text", "text": self.args.prompt}]
        # The same prompt_id after a reconnect returns the outcome; the prompt runs once.
        params = {"session_id": self.session_id, "prompt": blocks, "prompt_id": self.prompt_id}
        outcome: dict[str, Any] = await conn.request("session/prompt", params)
        with anyio.move_on_after(_FINISHED_EVENT_WAIT_S):
            await self.finished_seen.wait()
        return outcome


def run(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        print(f"vm-agent attach: give --token or set {TOKEN_ENV}", file=sys.stderr)
        return EXIT_USAGE
    if not args.url.startswith(("ws://", "wss://")):
        print("vm-agent attach: --url must be a ws:// or wss:// URL", file=sys.stderr)
        return EXIT_USAGE
    if args.ca_file is not None and not args.url.startswith("wss://"):
        print("vm-agent attach: --ca-file goes with a wss:// URL", file=sys.stderr)
        return EXIT_USAGE
    if args.cwd is not None and args.start is None:
        print("vm-agent attach: --cwd goes with --start", file=sys.stderr)
        return EXIT_USAGE
    if args.recover and args.session is None:
        print("vm-agent attach: --recover goes with --session", file=sys.stderr)
        return EXIT_USAGE
    if args.session_id is not None and args.start is None:
        print("vm-agent attach: --session-id goes with --start", file=sys.stderr)
        return EXIT_USAGE
    if args.prompt is not None and args.session is None and args.start is None:
        print("vm-agent attach: --prompt needs --session or --start", file=sys.stderr)
        return EXIT_USAGE
    try:
        tls = _tls_context(args.ca_file) if args.url.startswith("wss://") else None
    except (OSError, ssl.SSLError) as exc:
        print(f"vm-agent attach: --ca-file {args.ca_file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.terminal is not None:
        from vm_agent.cli import attach_terminal

        return attach_terminal.run(args, token, tls)
    if args.forward is not None:
        from vm_agent.cli import attach_forward

        return attach_forward.run(args, token, tls)
    attach = _Attach(
        args=args,
        token=token,
        session_id=args.session or args.session_id,
        last_seq=args.after_seq,
        tls=tls,
    )
    return anyio.run(_main, attach)


async def _main(attach: _Attach) -> int:
    result = EXIT_INTERRUPTED
    async with anyio.create_task_group() as tg:

        async def body() -> None:
            nonlocal result
            result = await _attach_loop(attach)
            tg.cancel_scope.cancel()

        tg.start_soon(body)
        await _interrupts(attach, tg.cancel_scope)
    return result


async def _interrupts(attach: _Attach, scope: anyio.CancelScope) -> None:
    # Ctrl-C while a prompt runs asks the daemon to cancel it; otherwise (or again) we leave.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if attach.args.prompt is None or attach.cancel_asked.is_set():
                scope.cancel()
                return
            attach.cancel_asked.set()
            print("-- cancelling the prompt (Ctrl-C again to leave)", file=sys.stderr, flush=True)


async def _attach_loop(attach: _Attach) -> int:
    delay = _BACKOFF_FIRST_S
    while True:
        before = attach.connections
        try:
            return await _one_connection(attach)
        except Exception as exc:
            leaf = _leaf(exc)
            if isinstance(leaf, _Unauthorized):
                print(f"vm-agent attach: unauthorized ({leaf})", file=sys.stderr, flush=True)
                return EXIT_FAILED
            if isinstance(leaf, JsonRpcError):
                print(f"vm-agent attach: {leaf.message}", file=sys.stderr, flush=True)
                return EXIT_FAILED
            if not isinstance(leaf, _RETRYABLE):
                raise
            if attach.connections == 0:  # never connected: a wrong URL, a daemon not up
                print(f"vm-agent attach: cannot connect: {leaf}", file=sys.stderr, flush=True)
                return EXIT_FAILED
            print(f"-- disconnected ({leaf}); reconnecting", file=sys.stderr, flush=True)
        if attach.connections > before:
            delay = _BACKOFF_FIRST_S  # this one had connected: start the backoff over
        await anyio.sleep(delay)
        delay = min(_BACKOFF_MAX_S, delay * 2)


async def _one_connection(attach: _Attach) -> int:
    headers = {"Authorization": f"Bearer {attach.token}"}
    # The library refuses ssl= with a ws:// URL, and ssl=None with a wss:// one.
    tls: dict[str, Any] = {} if attach.tls is None else {"ssl": attach.tls}
    try:
        ws = await connect(
            attach.args.url,
            additional_headers=headers,
            max_size=MAX_FRAME,
            proxy=None,
            **tls,
        )
    except InvalidStatus as exc:
        if exc.response.status_code in (401, 403):
            raise _Unauthorized(f"HTTP {exc.response.status_code}") from exc
        raise
    attach.connections += 1
    transport = _ClientTransport(ws)
    conn = Connection(
        transport, router(notifications={"session/event": attach.on_event}), name="daemon"
    )
    code = EXIT_FAILED
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(conn.run)
            tg.start_soon(_answer_permissions, attach, conn)
            try:
                code = await _converse(attach, conn)
            except PeerClosed:
                if transport.close_code == CLOSE_UNAUTHORIZED:
                    raise _Unauthorized(transport.close_reason or "closed 4001") from None
                raise
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await transport.aclose()
    return code


async def _converse(attach: _Attach, conn: Connection) -> int:
    if not await attach.session(conn):
        return EXIT_OK
    params = {"session_id": attach.session_id, "after_seq": attach.last_seq}
    await conn.request("session/subscribe", params)
    if attach.args.prompt is None:
        await conn.closed.wait()
        raise PeerClosed(conn.close_reason or "closed")
    outcome = attach.outcome or await _prompt_once(attach, conn)
    attach.finished = True
    if attach.args.json:
        print(json.dumps(outcome), flush=True)
    else:
        attach.renderer.outcome(outcome)
    return EXIT_OK if outcome.get("outcome") == "completed" else EXIT_FAILED


async def _answer_permissions(attach: _Attach, conn: Connection) -> None:
    while True:
        await attach.permission_asked.wait()
        attach.permission_asked = anyio.Event()
        requests, attach.permission_requests = attach.permission_requests, []
        for data in requests:
            params = _permission_answer(attach, data)
            try:
                await conn.request("permission/respond", params)
            except JsonRpcError as exc:  # answered already (a replay), or by policy
                print(f"-- permission: {exc.message}", file=sys.stderr, flush=True)


def _permission_answer(attach: _Attach, data: dict[str, Any]) -> dict[str, Any]:
    options = (data.get("request") or {}).get("options") or []
    wanted = "allow" if attach.args.permission == "allow" else "reject"
    chosen = next((o for o in options if str(o.get("kind", "")).startswith(wanted)), None)
    params: dict[str, Any] = {
        "session_id": attach.session_id,
        "request_id": data.get("request_id"),
    }
    if chosen is None:
        params["cancelled"] = True
    else:
        params["option_id"] = chosen.get("optionId")
    return params


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside nested task groups' exception groups, or the group itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _prompt_once(attach: _Attach, conn: Connection) -> dict[str, Any]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_when_asked, attach, conn)
        outcome = attach.outcome = await attach.prompt(conn)
        tg.cancel_scope.cancel()
    return outcome


async def _cancel_when_asked(attach: _Attach, conn: Connection) -> None:
    await attach.cancel_asked.wait()
    await conn.request("session/cancel", {"session_id": attach.session_id})
