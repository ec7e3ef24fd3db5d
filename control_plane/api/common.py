"""Shared HTTP plumbing: JSON errors, body parsing, bearer-token checks."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from anyio import to_thread
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from control_plane.identity.tokens import (
    ADMIN_SCOPE,
    CALLBACK_AUDIENCE,
    CALLBACK_SCOPE,
    USER_AUDIENCE,
    USER_SCOPE,
    Claims,
    TokenExpiredError,
    TokenInvalidError,
    TokenRevokedError,
)
from control_plane.plane import ControlPlane

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body, status_code=exc.status, headers=headers)


def plane_of(request: Request) -> ControlPlane:
    plane = request.app.state.plane
    assert isinstance(plane, ControlPlane)
    return plane


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_body(request: Request, model: type[M]) -> M:
    body = await _read_body(request, plane_of(request).settings.max_body_bytes)
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "body is not JSON") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, f"invalid body: {where}: {first['msg']}") from exc


def _claims(request: Request) -> Claims:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized")
    try:
        return plane_of(request).tokens.verify(token.strip())
    except TokenExpiredError as exc:
        raise ApiError(401, "token expired") from exc
    except TokenInvalidError as exc:
        raise ApiError(401, "unauthorized") from exc


async def require_callback(request: Request, node_id: str) -> Claims:
    """A callback token of this very node: 401 if not ours, expired or revoked (by a
    refresh, past its grace), 403 if another kind of token or another node's."""
    claims = _claims(request)
    if claims.aud != CALLBACK_AUDIENCE or claims.scopes != {CALLBACK_SCOPE}:
        raise ApiError(403, "forbidden: not a callback token")
    if claims.sub != node_id:
        raise ApiError(403, "forbidden: token is for another node")
    try:
        await to_thread.run_sync(plane_of(request).tokens.check_callback, claims)
    except TokenRevokedError as exc:
        raise ApiError(401, "token revoked: a refresh replaced it") from exc
    except TokenInvalidError as exc:
        raise ApiError(401, "unauthorized") from exc
    return claims


def require_user(request: Request, *, admin: bool = False) -> Claims:
    """A user token (scope "user"; "admin" too if asked). Callback/viewer tokens get 403."""
    claims = _claims(request)
    if claims.aud != USER_AUDIENCE or USER_SCOPE not in claims.scopes or not claims.sub:
        raise ApiError(403, "forbidden: not a user token")
    if admin and ADMIN_SCOPE not in claims.scopes:
        raise ApiError(403, "forbidden: admin scope required")
    return claims
