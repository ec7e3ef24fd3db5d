"""Stored layer defaults (user tokens): `PUT` a new version, `GET` the current or any one.

Paths: /api/defaults/{projects|users|agent-profiles|triggers|platform}/{id}.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import (
    INT32_MAX,
    ApiError,
    parse_body,
    plane_of,
    query_int,
    require_user,
)
from control_plane.demand.reservations import LayerKind
from control_plane.demand.resolver import RequirementsError
from control_plane.identity.tokens import ADMIN_SCOPE
from control_plane.storage import layers


class DefaultsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    requirements: dict[str, Any]
    expected_version: int | None = Field(default=None, alias="expectedVersion", ge=0, le=INT32_MAX)


def _kind(request: Request) -> LayerKind:
    path = request.path_params["kind"]
    kind = layers.STORED_KINDS.get(path)
    if kind is None:
        known = ", ".join(layers.STORED_KINDS)
        raise ApiError(404, f"no such layer kind {path!r} (known: {known})")
    return kind


async def put_defaults(request: Request) -> JSONResponse:
    claims = require_user(request)
    assert claims.sub is not None
    kind = _kind(request)
    body = await parse_body(request, DefaultsBody)
    plane = plane_of(request)
    try:
        stored = await to_thread.run_sync(
            lambda: layers.put_defaults(
                plane.engine,
                kind,
                request.path_params["layer_id"],
                body.requirements,
                actor=str(claims.sub),
                admin=ADMIN_SCOPE in claims.scopes,
                now=plane.clock(),
                expected_version=body.expected_version,
            )
        )
    except RequirementsError as exc:
        raise ApiError(422, str(exc), layer=exc.layer.value, field=exc.field) from exc
    except layers.LayerError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return JSONResponse(stored.to_api(), status_code=201 if stored.version == 1 else 200)


async def get_defaults(request: Request) -> JSONResponse:
    require_user(request)
    kind = _kind(request)
    layer_id = request.path_params["layer_id"]
    version = None
    if "version" in request.query_params:
        version = query_int(request, "version", default=0, minimum=0, maximum=INT32_MAX)
    stored = await to_thread.run_sync(
        layers.get_defaults, plane_of(request).engine, kind, layer_id, version
    )
    if stored is None:
        which = "" if version is None else f" version {version}"
        raise ApiError(404, f"no stored defaults for {kind.value} {layer_id!r}{which}")
    return JSONResponse(stored.to_api())


routes = [
    Route("/api/defaults/{kind}/{layer_id}", put_defaults, methods=["PUT"]),
    Route("/api/defaults/{kind}/{layer_id}", get_defaults, methods=["GET"]),
]
