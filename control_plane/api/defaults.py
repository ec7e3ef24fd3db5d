"""Stored layer defaults (user tokens): `PUT` a new version, `GET` the current or any one,
and an admin's list of who else may use a project, agent profile or trigger.

Paths: /api/defaults/{projects|users|agent-profiles|triggers|platform}/{id}, with
`?owner=` naming whose project/profile/trigger (default: the caller's own; another's only
for an admin, or to read one shared with the caller). A layer the caller may not read
answers 404, exactly as one nobody stored.
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
from control_plane.demand.agent_settings import SettingsError
from control_plane.demand.reservations import LayerKind
from control_plane.demand.resolver import RequirementsError
from control_plane.identity.tokens import ADMIN_SCOPE
from control_plane.storage import layers


class DefaultsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # A new version is the whole layer: what is absent is not defined in it.
    requirements: dict[str, Any] = Field(default_factory=dict)
    agent_settings: dict[str, Any] | None = Field(default=None, alias="agentSettings")
    expected_version: int | None = Field(default=None, alias="expectedVersion", ge=0, le=INT32_MAX)


class SharesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[str] = Field(max_length=1000)


def _kind(request: Request) -> LayerKind:
    path = request.path_params["kind"]
    kind = layers.STORED_KINDS.get(path)
    if kind is None:
        known = ", ".join(layers.STORED_KINDS)
        raise ApiError(404, f"no such layer kind {path!r} (known: {known})")
    return kind


def _owner(request: Request, kind: LayerKind) -> str | None:
    """The `?owner=` of a project, profile or trigger; refused for the other kinds."""
    owner = request.query_params.get("owner")
    if owner is None:
        return None
    if kind not in layers.SCOPED:
        raise ApiError(
            422, f"owner applies to projects, agent profiles and triggers, not {kind.value}"
        )
    if not layers.LAYER_ID.fullmatch(owner):
        raise ApiError(422, "owner must be 1-128 of [A-Za-z0-9._:@-]")
    return owner


async def put_defaults(request: Request) -> JSONResponse:
    claims = require_user(request)
    assert claims.sub is not None
    kind = _kind(request)
    owner = _owner(request, kind)
    body = await parse_body(request, DefaultsBody)
    plane = plane_of(request)
    try:
        stored = await to_thread.run_sync(
            lambda: layers.put_defaults(
                plane.engine,
                kind,
                request.path_params["layer_id"],
                body.requirements,
                settings_raw=body.agent_settings,
                owner=owner,
                actor=str(claims.sub),
                admin=ADMIN_SCOPE in claims.scopes,
                now=plane.clock(),
                expected_version=body.expected_version,
            )
        )
    except (RequirementsError, SettingsError) as exc:
        raise ApiError(422, str(exc), layer=exc.layer.value, field=exc.field) from exc
    except layers.LayerError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return JSONResponse(stored.to_api(), status_code=201 if stored.version == 1 else 200)


async def get_defaults(request: Request) -> JSONResponse:
    claims = require_user(request)
    actor = str(claims.sub)
    kind = _kind(request)
    layer_id = request.path_params["layer_id"]
    scope = layers.namespace(kind, layer_id, _owner(request, kind), actor)
    version = None
    if "version" in request.query_params:
        version = query_int(request, "version", default=0, minimum=0, maximum=INT32_MAX)
    admin = ADMIN_SCOPE in claims.scopes
    stored = await to_thread.run_sync(
        lambda: layers.get_defaults(
            plane_of(request).engine,
            kind,
            scope,
            layer_id,
            actor=actor,
            admin=admin,
            version=version,
        )
    )
    if stored is None:
        which = "" if version is None else f" version {version}"
        raise ApiError(404, f"no stored defaults for {kind.value} {layer_id!r}{which}")
    body = stored.to_api()
    if kind in layers.SCOPED and (admin or stored.owner == actor):
        # Who else may use it: for its owner and admins, not for those it is shared with.
        body["sharedWith"] = await to_thread.run_sync(
            layers.get_shares, plane_of(request).engine, kind, scope, layer_id
        )
    return JSONResponse(body)


async def put_shares(request: Request) -> JSONResponse:
    """An admin sets who else may read and use `owner`'s project, profile or trigger."""
    claims = require_user(request, admin=True)
    kind = _kind(request)
    owner = _owner(request, kind)
    if owner is None:
        raise ApiError(422, "owner is required: whose layer is shared")
    body = await parse_body(request, SharesBody)
    for user in body.users:
        if not layers.LAYER_ID.fullmatch(user):
            raise ApiError(422, "users must be 1-128 of [A-Za-z0-9._:@-] each")
    plane = plane_of(request)
    layer_id = request.path_params["layer_id"]
    try:
        users = await to_thread.run_sync(
            lambda: layers.set_shares(
                plane.engine,
                kind,
                owner,
                layer_id,
                body.users,
                actor=str(claims.sub),
                now=plane.clock(),
            )
        )
    except layers.LayerError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return JSONResponse({"kind": kind.value, "owner": owner, "id": layer_id, "users": users})


routes = [
    Route("/api/defaults/{kind}/{layer_id}", put_defaults, methods=["PUT"]),
    Route("/api/defaults/{kind}/{layer_id}", get_defaults, methods=["GET"]),
    Route("/api/defaults/{kind}/{layer_id}/shares", put_shares, methods=["PUT"]),
]
