"""Signing key rotation (admin user tokens): `POST /api/keys/rotate` publishes a new key at
once; it signs after the activation delay (the setting, or `activateAfterS`). The key is
in the database, so every replica publishes it, verifies with it and then signs with it."""

from __future__ import annotations

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.identity.keys import MAX_ACTIVATION_DELAY_S


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
    activate_after_s: float | None = Field(
        default=None, alias="activateAfterS", ge=0, le=MAX_ACTIVATION_DELAY_S
    )


async def rotate(request: Request) -> JSONResponse:
    require_user(request, admin=True)
    body = await parse_body(request, RotateBody)
    keys = plane_of(request).tokens.keys
    try:
        new = await to_thread.run_sync(keys.rotate, body.activate_after_s)
    except ValueError as exc:  # the store's own check, before it stores anything
        raise ApiError(422, str(exc)) from None
    return JSONResponse({"kid": new.kid, "notBefore": new.not_before}, status_code=201)


routes = [Route("/api/keys/rotate", rotate, methods=["POST"])]
