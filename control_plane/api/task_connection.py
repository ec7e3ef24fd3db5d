"""What a task's owner needs to reach the task's session on its node (the ACP gateway's
`vm-agent acp --task ID`): `POST /api/tasks/{id}/connection` answers the node's viewer
URL, the TLS name its certificate carries and the node CA to trust, the session id, and a
short-lived viewer token minted for the owner (read and write, that node only, never the
node scope). Only the owner: another user's task, or an admin naming `?owner=`, is a 404
as for no task (a token for someone else's session would let the caller act as them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, plane_of, require_user
from control_plane.dispatch import addresses, views
from control_plane.dispatch import status as st
from control_plane.plane import ControlPlane

VIEWER_SCOPES = ["read", "write"]  # never "node": that reaches every session of the node
# Statuses after which the task's session exists on its node (it may have stopped since:
# the daemon loads it again when the gateway asks).
_HAD_SESSION = frozenset({st.Status.RUNNING, st.Status.AWAITING_FOLLOW_UP})


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str


def connection_refusal(view: dict[str, Any], address_known: bool) -> Refusal | None:
    """Why the task's session cannot be reached now (None: it can). Pure.

    The session exists on the node once the task has run a prompt (`running` or later);
    before that (queued, waiting for its node, starting) there is nothing to attach to
    yet, and a task that ended before its session started never has one."""
    seen = {t.get("status") for t in view.get("transitions") or []} | {view.get("status")}
    status = str(view.get("status"))
    if view.get("nodeId") is None or view.get("sessionId") is None or not seen & _HAD_SESSION:
        if st.is_end(status):
            return Refusal(409, f"task ended ({status}) without a session on a node")
        return Refusal(409, f"task has no session yet (status {status}); ask again later")
    if not address_known:
        return Refusal(409, f"the address of node {view['nodeId']} is not known yet")
    return None


def _connection(plane: ControlPlane, owner: str, task_id: str) -> dict[str, Any]:
    found = views.owned_task_view(plane.engine, owner, task_id)
    if found is None or found[1]["owner"] != owner:
        raise ApiError(404, "no such task")
    view = found[1]
    node_id = view["nodeId"]
    address = None
    if node_id is not None:
        with plane.engine.connect() as conn:
            address = addresses.address_of(conn, node_id, plane.settings.node_domain)
    refusal = connection_refusal(view, address is not None)
    if refusal is not None:
        raise ApiError(refusal.status, refusal.message, taskStatus=view["status"])
    assert address is not None
    tokens = plane.tokens
    ttl = min(plane.settings.task_connection_token_ttl_s, tokens.max_ttl_s)
    token = tokens.mint_viewer_token(node_id, VIEWER_SCOPES, ttl, subject=owner)
    return {
        "taskId": view["taskId"],
        "nodeId": node_id,
        "sessionId": view["sessionId"],
        "viewerUrl": address.viewer_url,
        # Over TLS: the name to check the node's certificate for (whatever host the URL
        # names), and the CA that signs nodes' certificates. Neither on loopback ws://.
        "tlsName": address.tls_name,
        "caPem": None if address.tls_name is None else plane.node_ca.certificate_pem(),
        "token": token,
        "expiresAt": plane.clock() + ttl,
    }


async def task_connection(request: Request) -> JSONResponse:
    claims = require_user(request)
    plane = plane_of(request)
    owner, task_id = str(claims.sub), request.path_params["task_id"]
    # Database and (on first use) the node CA's file: off the event loop.
    body = await to_thread.run_sync(_connection, plane, owner, task_id)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


routes = [Route("/api/tasks/{task_id}/connection", task_connection, methods=["POST"])]
