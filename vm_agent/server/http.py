"""Plain HTTP on the viewer port: ``GET /health`` and ``GET /metrics`` (no auth, no secrets)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

import vm_agent

HealthExtra = Callable[[], dict[str, Any]]


def health_body(
    *,
    node_id: str,
    accepting: bool,
    states: Iterable[str],
    uptime_s: float,
    viewers: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "ok" if accepting else "stopping",
        "node_id": node_id,
        "version": vm_agent.__version__,
        "sessions": dict(sorted(Counter(states).items())),
        "uptime_s": round(uptime_s, 3),
        "viewers": viewers,
    }
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return body


def respond(conn: ServerConnection, status: int, body: bytes | str, content_type: str) -> Response:
    text = body.decode() if isinstance(body, bytes) else body
    response = conn.respond(status, text)
    headers = Headers(
        (k, v) for k, v in response.headers.raw_items() if k.lower() != "content-type"
    )
    headers["Content-Type"] = content_type
    return Response(response.status_code, response.reason_phrase, headers, response.body)


def json_response(conn: ServerConnection, status: int, obj: Any) -> Response:
    return respond(conn, status, json.dumps(obj, separators=(",", ":")), "application/json")


def not_found(conn: ServerConnection) -> Response:
    return json_response(conn, 404, {"error": "not found"})
