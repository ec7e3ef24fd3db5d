"""Plain HTTP on the viewer port: ``/health`` for a load balancer, the node-scope check of
``/metrics`` and ``/status``, and the responses they and the upgrade's auth give."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

import vm_agent
from vm_agent.server.incidents import Incidents
from vm_agent.server.protocols import ServerMetrics, TokenVerifier
from vm_agent.server.viewer import AuthFailed, bearer_token, verify

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


async def node_only(
    conn: ServerConnection, request: Request, verifier: TokenVerifier, incidents: Incidents
) -> Response | None:
    """None when the request carries a valid token with the ``node`` scope; else 401/403."""
    headers = request.headers.get_all("Authorization")
    try:
        if len(headers) != 1:
            raise AuthFailed("no Authorization header" if not headers else "several")
        identity = await verify(verifier, bearer_token(headers[0]) or "")
    except AuthFailed as exc:
        address = conn.remote_address
        incidents.auth_failed(f"GET {request.path} from {address[0] if address else '?'}", str(exc))
        return unauthorized(conn)
    if not identity.is_node:
        return forbidden(conn, "node")
    return None


def metrics_response(conn: ServerConnection, metrics: ServerMetrics | None) -> Response:
    if metrics is None:
        return not_found(conn)
    body, content_type = metrics.render()
    return respond(conn, 200, body, content_type)
