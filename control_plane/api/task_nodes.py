"""Where the dispatcher reaches a node (admin): `PUT /api/nodes/{node}/address`
`{"viewerUrl", "workspaceRoot"}` records it (a node not created through `POST /api/nodes`,
or one reached at another name); `GET` reads what the dispatcher would use."""

from __future__ import annotations

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.dispatch import addresses


class AddressBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    viewer_url: str = Field(alias="viewerUrl", max_length=512)
    workspace_root: str = Field(alias="workspaceRoot", pattern=r"^/[^\x00]{0,511}$")


async def put_address(request: Request) -> JSONResponse:
    require_user(request, admin=True)
    body = await parse_body(request, AddressBody)
    why = addresses.check_viewer_url(body.viewer_url)
    if why is not None:
        raise ApiError(422, why)
    plane = plane_of(request)
    node_id = request.path_params["node_id"]
    await to_thread.run_sync(
        addresses.record_address,
        plane.engine,
        node_id,
        body.viewer_url,
        body.workspace_root,
        plane.clock(),
    )
    return await get_address(request)


async def get_address(request: Request) -> JSONResponse:
    require_user(request, admin=True)
    plane = plane_of(request)

    def read() -> addresses.Address | None:
        with plane.engine.connect() as conn:
            node_id = request.path_params["node_id"]
            return addresses.address_of(conn, node_id, plane.settings.node_domain)

    found = await to_thread.run_sync(read)
    if found is None:
        raise ApiError(404, "no address known for this node")
    return JSONResponse(
        {
            "viewerUrl": found.viewer_url,
            "workspaceRoot": found.workspace_root,
            "tlsName": found.tls_name,
        }
    )


routes = [
    Route("/api/nodes/{node_id}/address", put_address, methods=["PUT"]),
    Route("/api/nodes/{node_id}/address", get_address, methods=["GET"]),
]
