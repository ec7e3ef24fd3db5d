"""Knobs on one connection's socket and protocol: the pre-auth limits and lifting them, the
send buffer's cap, and the name a log line gives the peer."""

from __future__ import annotations

import logging
import socket
from typing import Any

from websockets.asyncio.server import ServerConnection

log = logging.getLogger("vm_agent.server.server")

# Until a viewer has authenticated: one message holds an auth request with a token of up to
# 16 KiB (the verifier's bound), and two such frames are buffered before reading pauses.
PREAUTH_FRAME_BYTES = 32 * 1024
PREAUTH_QUEUE = 2
QUEUE = 16  # frames buffered for an authenticated viewer (the library's default)


def lift_limits(ws: ServerConnection, max_frame_bytes: int) -> int | None:
    """Full frames and queue for an authenticated viewer; returns its socket's descriptor."""
    protocol: Any = ws.protocol
    if hasattr(protocol, "max_message_size"):  # websockets >= 15
        protocol.max_message_size = max_frame_bytes
    else:
        protocol.max_size = max_frame_bytes
    assembler: Any = ws.recv_messages
    assembler.high, assembler.low = QUEUE, QUEUE // 4
    return fileno(ws)


def library_logger() -> logging.Logger:
    # The library logs every connection opened or refused at INFO: a flood would be a flood
    # of lines. What matters (refusals, auth failures) is logged by us, at a bounded rate.
    logger = logging.getLogger("vm_agent.server.websockets")
    logger.setLevel(logging.WARNING)
    return logger


def fileno(ws: ServerConnection) -> int | None:
    sock = ws.transport.get_extra_info("socket")
    if sock is None:
        return None
    fd = sock.fileno()
    return fd if fd >= 0 else None


def cap_send_buffer(ws: ServerConnection, size: int) -> None:
    sock = ws.transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError as exc:
        log.debug("cannot cap the send buffer: %s", exc)


def peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else "?"
