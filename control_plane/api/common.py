"""Shared HTTP plumbing: JSON errors, body parsing, query parameters, bearer-token checks.

Every JSON body goes through `parse_body`, which refuses what JSON is not (NaN, Infinity,
numbers that overflow a double), what our columns cannot hold (integers past 64 bits, NUL
in a string) and nesting past `MAX_JSON_DEPTH` with a 400 before any model or store sees
it: a stored NaN once made placement answer 500 for every user (docs/threat-model.md).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

import anyio
from anyio import to_thread
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

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

# Deeper than any body we take (an event's data included); far below the parser's own
# recursion limit, so models and stores never walk a pathological document.
MAX_JSON_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MAX = 2**31 - 1  # Integer columns (a layer's version)
# Integer query parameters: digits only, and few enough to fit 64 bits.
_MAX_QUERY_DIGITS = 18


class ApiError(Exception):
    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, **extra}


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 408:  # the rest of the body may still be coming: not on this connection
        headers = {"Connection": "close"}
    return JSONResponse(exc.body, status_code=exc.status, headers=headers)


def plane_of(request: Request) -> ControlPlane:
    plane = request.app.state.plane
    assert isinstance(plane, ControlPlane)
    return plane


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    # The server's head deadline ends where the body starts: a body dribbled a byte at a
    # time would hold the connection (and this task) for as long as the client liked.
    with anyio.move_on_after(timeout_s) as reading:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body larger than {limit} bytes")
            chunks.append(chunk)
    if reading.cancelled_caught:
        raise ApiError(408, f"body not received within {timeout_s:g} s")
    return b"".join(chunks)


class JsonInputError(ValueError):
    """A body that is not strict JSON, or one we do not take (the message says which)."""


def _no_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise JsonInputError(f"number {text[:32]} is out of range")
    return value


def _int64(text: str) -> int:
    # Python caps int() at 4,300 digits (ValueError); 20 digits is already out of range.
    if len(text.lstrip("-")) > 19:
        raise JsonInputError(f"integer {text[:32]}... is out of range (64 bits)")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise JsonInputError(f"integer {text} is out of range (64 bits)")
    return value


def _has_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _check_tree(doc: Any, max_depth: int, nul: bool) -> None:
    # Iterative: a recursive walk is what a deep document is meant to break.
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if not nul and any(_has_nul(k) for k in value):
                raise JsonInputError("a NUL character in a key")
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            if not nul and _has_nul(value):
                # PostgreSQL's text cannot hold it: refused here, not as a 500 there.
                raise JsonInputError("a NUL character in a string")
            continue
        if depth > max_depth:
            raise JsonInputError(f"nested deeper than {max_depth}")
        stack.extend((child, depth + 1) for child in children)


def loads_strict(
    body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, relayed: bool = False
) -> Any:
    """Strict JSON: no NaN/Infinity, finite doubles, bounded nesting, and (unless the body
    is `relayed`: what agents and viewers chose, which the daemon passes on as it is, and
    where the model bounds what reaches a column) 64-bit integers and no NUL in strings;
    anything else raises JsonInputError (never RecursionError or another surprise)."""
    try:
        doc = json.loads(
            body,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=None if relayed else _int64,
        )
    except RecursionError:
        raise JsonInputError(f"nested deeper than {max_depth}") from None
    except JsonInputError:
        raise
    except ValueError as exc:  # UnicodeDecodeError included
        raise JsonInputError("not JSON") from exc
    _check_tree(doc, max_depth, nul=relayed)
    return doc


async def parse_body(
    request: Request, model: type[M], *, relayed: bool = False, optional: bool = False
) -> M:
    """The body as `model`: 413 past the size bound, 400 if not strict JSON (see
    `loads_strict`), 422 if the model refuses it. `optional`: no body is `model()`."""
    settings = plane_of(request).settings
    body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    if optional and not body.strip():
        return model()
    try:
        raw = loads_strict(body, relayed=relayed)
    except JsonInputError as exc:
        raise ApiError(400, f"body is not accepted JSON: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, f"invalid body: {where}: {first['msg']}") from exc


# Control characters: no id or parameter of ours holds one, PostgreSQL's text cannot hold
# NUL, and a newline in a logged path could forge a log line.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


class RefuseControlCharacters:
    """ASGI middleware: a path or query string with a control character (percent-encoded
    or not) is a 400 before any route sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            query: bytes = scope.get("query_string", b"")
            if _CONTROL.search(unquote_to_bytes(raw)) or _CONTROL.search(
                unquote_to_bytes(query.replace(b"+", b" "))
            ):
                response = JSONResponse(
                    {"error": "control character in the path or query"}, status_code=400
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def query_int(request: Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter in [minimum, maximum]; anything else is a 422."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_QUERY_DIGITS:
        raise ApiError(422, f"{name} must be an integer from {minimum} to {maximum}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ApiError(422, f"{name} must be an integer from {minimum} to {maximum}")
    return value


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
