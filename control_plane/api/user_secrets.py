"""A user's secrets for their MCP servers (issue 25), write-only (docs/control-plane.md).

``PUT /api/secrets/{name}`` ``{"value": "..."}`` stores it sealed (201 new, 200 replaced);
``GET /api/secrets`` lists names and times; ``DELETE /api/secrets/{name}`` removes it. Each
user has their own: nobody lists, replaces, removes or references another's. No answer,
log line or error carries a value.
"""

from __future__ import annotations

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.identity import user_secrets as store


class SecretBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    value: SecretStr = Field(min_length=1)


def _name(request: Request) -> str:
    name = str(request.path_params["name"])
    if not store.NAME.fullmatch(name):
        raise ApiError(422, "a secret's name is 1-64 of [A-Za-z0-9_.-]")
    return name


async def put_secret(request: Request) -> JSONResponse:
    claims = require_user(request)
    name = _name(request)
    body = await parse_body(request, SecretBody)
    value = body.value.get_secret_value()
    if len(value.encode()) > store.MAX_VALUE_BYTES:
        raise ApiError(422, f"a secret's value is at most {store.MAX_VALUE_BYTES} bytes")
    plane = plane_of(request)
    try:
        created = await to_thread.run_sync(
            lambda: store.put(
                plane.engine, plane.sealer, str(claims.sub), name, value, now=plane.clock()
            )
        )
    except store.SecretLimitError as exc:
        raise ApiError(422, str(exc)) from exc
    return JSONResponse({"name": name}, status_code=201 if created else 200)


async def list_secrets(request: Request) -> JSONResponse:
    claims = require_user(request)
    plane = plane_of(request)
    found = await to_thread.run_sync(store.listing, plane.engine, str(claims.sub))
    return JSONResponse({"secrets": found}, headers={"Cache-Control": "no-store"})


async def delete_secret(request: Request) -> Response:
    claims = require_user(request)
    name = _name(request)
    plane = plane_of(request)
    gone = await to_thread.run_sync(store.remove, plane.engine, str(claims.sub), name)
    if not gone:
        raise ApiError(404, f"no secret {name!r}")
    return Response(status_code=204)


routes = [
    Route("/api/secrets", list_secrets, methods=["GET"]),
    Route("/api/secrets/{name}", put_secret, methods=["PUT"]),
    Route("/api/secrets/{name}", delete_secret, methods=["DELETE"]),
]
