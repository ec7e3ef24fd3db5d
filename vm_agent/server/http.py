"""Plain HTTP on the viewer port: ``/health`` for a load balancer, and the responses that
the node-scope endpoints (``/metrics``, ``/status``) and the upgrade's auth give."""

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


def health_body(*, accepting: bool) -> dict[str, Any]:
    """What a load balancer needs: up and taking viewers, or not (no node id, no counts)."""
    return {"status": "ok" if accepting else "stopping"}


def status_body(
    *,
    node_id: str,
    accepting: bool,
    states: Iterable[str],
    uptime_s: float,
    viewers: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The operator's view (``/status``, node scope only): still no secrets."""
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


def respond(
    conn: ServerConnection,
    status: int,
    body: bytes | str,
    content_type: str,
    extra_headers: dict[str, str] | None = None,
) -> Response:
    text = body.decode() if isinstance(body, bytes) else body
    response = conn.respond(status, text)
    headers = Headers(
        (k, v) for k, v in response.headers.raw_items() if k.lower() != "content-type"
    )
    headers["Content-Type"] = content_type
    for key, value in (extra_headers or {}).items():
        headers[key] = value
    return Response(response.status_code, response.reason_phrase, headers, response.body)


def json_response(
    conn: ServerConnection, status: int, obj: Any, extra_headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(obj, separators=(",", ":"))
    return respond(conn, status, body, "application/json", extra_headers)


def not_found(conn: ServerConnection) -> Response:
    return json_response(conn, 404, {"error": "not found"})


def unauthorized(conn: ServerConnection) -> Response:
    """401 with the challenge RFC 6750 asks for; never the reason (that is for our log)."""
    return json_response(
        conn,
        401,
        {"error": "unauthorized"},
        {"WWW-Authenticate": 'Bearer realm="vm-agent"'},
    )


def forbidden(conn: ServerConnection, needs: str) -> Response:
    return json_response(conn, 403, {"error": f"forbidden: needs the {needs!r} scope"})
