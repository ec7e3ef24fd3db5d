"""Read endpoints for tests and dev, behind a user token with the "admin" scope.

The event list pages: `?limit=` (at most node_store.MAX_EVENTS_PAGE) events in (session,
seq) order, and `next_after` to pass as `?after=` for the next page (null at the end).
"""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, plane_of, query_int, require_user
from control_plane.storage import node_store

DEFAULT_EVENTS_PAGE = 1000


async def list_events(request: Request) -> JSONResponse:
    require_user(request, admin=True)
    node_id = request.path_params["node_id"]
    session_id = request.query_params.get("session_id")
    limit = query_int(
        request,
        "limit",
        default=DEFAULT_EVENTS_PAGE,
        minimum=1,
        maximum=node_store.MAX_EVENTS_PAGE,
    )
    raw_after = request.query_params.get("after")
    try:
        after = None if raw_after is None else node_store.EventCursor.parse(raw_after)
    except ValueError as exc:
        raise ApiError(422, f"after: {exc}") from None
    plane = plane_of(request)
    rows, cursor = await to_thread.run_sync(
        lambda: node_store.list_events(plane.engine, node_id, session_id, after=after, limit=limit)
    )
    next_after = None if cursor is None else cursor.to_text()
    return JSONResponse({"events": rows, "next_after": next_after})


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
