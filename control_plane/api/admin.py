"""Read endpoints for tests and dev, behind a user token with the "admin" scope."""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, plane_of, require_user
from control_plane.storage import node_store


async def list_events(request: Request) -> JSONResponse:
    require_user(request, admin=True)
    node_id = request.path_params["node_id"]
    session_id = request.query_params.get("session_id")
    plane = plane_of(request)
    rows = await to_thread.run_sync(node_store.list_events, plane.engine, node_id, session_id)
    return JSONResponse({"events": rows})


async def get_node(request: Request) -> JSONResponse:
    require_user(request, admin=True)
    node_id = request.path_params["node_id"]
    row = await to_thread.run_sync(node_store.get_node, plane_of(request).engine, node_id)
    if row is None:
        raise ApiError(404, "no such node")
    return JSONResponse(row)


# Same path as the events POST; Starlette dispatches by method across routes.
routes = [
    Route("/api/nodes/{node_id}/events", list_events, methods=["GET"]),
    Route("/api/nodes/{node_id}", get_node, methods=["GET"]),
]
