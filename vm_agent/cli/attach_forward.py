"""``vm-agent attach --session S --forward [LOCAL:]PORT``: a session's server, here.

Listens on 127.0.0.1:LOCAL (0: any free port, printed) and carries each connection to
PORT of the session through the daemon's port (``port/open``, ``port/send``, the
``port/data`` notifications): open ``http://127.0.0.1:LOCAL/`` in a browser to see the
agent's dev server (HTTP and websockets alike). One websocket to the daemon carries every
connection; when it drops, the command ends (run it again).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ssl
import sys
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.memory import MemoryObjectSendStream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from vm_agent.cli.viewer_client import MAX_FRAME, ClientTransport, Unauthorized
from vm_agent.jsonrpc.connection import Connection, PeerClosed, router
from vm_agent.jsonrpc.errors import JsonRpcError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_CHUNK = 48 * 1024  # base64 of it stays under the daemon's 64 KiB a port/send
_BUFFERED = 64  # port/data messages held for one slow local reader before it is cut


def parse_forward(value: str) -> tuple[int, int]:
    """``PORT`` or ``LOCAL:PORT`` to (local, remote); ``ValueError`` with a reason."""
    local_s, _, remote_s = value.rpartition(":")
    local = int(local_s) if local_s else 0
    remote = int(remote_s)
    if not (0 <= local <= 65535 and 1 <= remote <= 65535):
        raise ValueError(f"--forward {value}: ports are 1-65535 (a local 0: any free port)")
    return local, remote


class _Forward:
    def __init__(self, session_id: str, remote: int) -> None:
        self.session_id = session_id
        self.remote = remote
        self.inbound: dict[str, MemoryObjectSendStream[bytes | None]] = {}

    def on_data(self, params: Any) -> None:
        sink = self.inbound.get(str((params or {}).get("stream_id")))
        if sink is None:
            return
        try:
            sink.send_nowait(base64.b64decode(params.get("data", "")))
        except anyio.WouldBlock:  # the local side stopped reading: cut this connection
            sink.close()

    def on_closed(self, params: Any) -> None:
        sink = self.inbound.get(str((params or {}).get("stream_id")))
        if sink is not None:
            with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                sink.send_nowait(None)

    async def carry(self, conn: Connection, local: SocketStream) -> None:
        async with local:
            try:
                opened = await conn.request(
                    "port/open", {"session_id": self.session_id, "port": self.remote}
                )
            except JsonRpcError as exc:
                print(f"-- refused: {exc.message}", file=sys.stderr, flush=True)
                return
            stream_id = str(opened["stream_id"])
            send, receive = anyio.create_memory_object_stream[bytes | None](_BUFFERED)
            self.inbound[stream_id] = send
            try:
                async with anyio.create_task_group() as tg:

                    async def down() -> None:
                        async with receive:
                            async for data in receive:
                                if data is None:
                                    break
                                await local.send(data)
                        tg.cancel_scope.cancel()

                    tg.start_soon(down)
                    while True:
                        try:
                            data = await local.receive(_CHUNK)
                        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                            break
                        params = {"stream_id": stream_id, "data": base64.b64encode(data).decode()}
                        await conn.request("port/send", params)
                    # The local side is done sending; the answer may still be coming.
                    await anyio.sleep_forever()
            except (JsonRpcError, anyio.BrokenResourceError, OSError):
                pass
            finally:
                self.inbound.pop(stream_id, None)
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await conn.request("port/close", {"stream_id": stream_id})


def run(args: argparse.Namespace, token: str, tls: ssl.SSLContext | None) -> int:
    if args.session is None:
        print("vm-agent attach: --forward needs --session", file=sys.stderr)
        return EXIT_USAGE
    try:
        local, remote = parse_forward(args.forward)
    except ValueError as exc:
        print(f"vm-agent attach: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return anyio.run(_main, args.url, token, tls, _Forward(args.session, remote), local)


async def _main(
    url: str, token: str, tls: ssl.SSLContext | None, forward: _Forward, local: int
) -> int:
    session_id, remote = forward.session_id, forward.remote
    headers = {"Authorization": f"Bearer {token}"}
    extra: dict[str, Any] = {} if tls is None else {"ssl": tls}
    try:
        ws = await connect(url, additional_headers=headers, max_size=MAX_FRAME, proxy=None, **extra)
    except InvalidStatus as exc:
        print(f"vm-agent attach: HTTP {exc.response.status_code}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, InvalidHandshake) as exc:
        print(f"vm-agent attach: cannot connect: {exc}", file=sys.stderr)
        return EXIT_FAILED
    transport = ClientTransport(ws)
    conn = Connection(
        transport,
        router(notifications={"port/data": forward.on_data, "port/closed": forward.on_closed}),
        name="daemon",
    )
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=local)
    bound = listener.extra(SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    print(
        f"-- forwarding 127.0.0.1:{bound} to port {remote} of session {session_id} "
        "(Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        async with listener, anyio.create_task_group() as tg:
            await tg.start(conn.run)

            async def accept(client: SocketStream) -> None:
                await forward.carry(conn, client)

            tg.start_soon(listener.serve, accept, tg)
            await conn.closed.wait()
            tg.cancel_scope.cancel()
    except (PeerClosed, ConnectionClosed, Unauthorized) as exc:
        print(f"vm-agent attach: the connection ended: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await transport.aclose()
    print("vm-agent attach: the daemon closed the connection", file=sys.stderr)
    return EXIT_FAILED
