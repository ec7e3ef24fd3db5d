"""A user's credentials for a provider's API (bring your own cloud), write-only.

``PUT /api/providers/{provider}/credentials`` ``{"token": "..."}`` stores it sealed; ``GET``
answers only whether one is set and since when; ``DELETE`` removes it. No answer, log line
or error ever carries the credential itself. `qemu` takes none (its VMs run on the control
plane's own machine, which no user's credential opens): a PUT for it is refused, not kept.
"""

from __future__ import annotations

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.demand.capacity import PROVIDER_CAPACITY
from control_plane.providers import credentials


class CredentialBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr = Field(min_length=1, max_length=4096)


def _provider(request: Request) -> str:
    provider = str(request.path_params["provider"])
    if provider not in PROVIDER_CAPACITY:
        raise ApiError(404, f"unknown provider (known: {', '.join(sorted(PROVIDER_CAPACITY))})")
    return provider


# providers whose VMs no user's credential opens (registry.credential_for ignores them)
NO_CREDENTIAL = {"qemu": "qemu takes no credential: its VMs run on the control plane's machine"}


async def put_credentials(request: Request) -> Response:
    claims = require_user(request)
    provider = _provider(request)
    body = await parse_body(request, CredentialBody)
    if provider in NO_CREDENTIAL:
        raise ApiError(422, NO_CREDENTIAL[provider])
    plane = plane_of(request)
    await to_thread.run_sync(
        lambda: credentials.store(
            plane.engine,
            plane.sealer,
            str(claims.sub),
            provider,
            body.token.get_secret_value(),
            now=plane.clock(),
        )
    )
    return Response(status_code=204)


async def get_credentials(request: Request) -> JSONResponse:
    claims = require_user(request)
    provider = _provider(request)
    plane = plane_of(request)
    when = await to_thread.run_sync(credentials.updated_at, plane.engine, str(claims.sub), provider)
    return JSONResponse({"provider": provider, "configured": when is not None, "updatedAt": when})


async def delete_credentials(request: Request) -> Response:
    claims = require_user(request)
    provider = _provider(request)
    plane = plane_of(request)
    gone = await to_thread.run_sync(credentials.remove, plane.engine, str(claims.sub), provider)
    if not gone:
        raise ApiError(404, "no credentials for this provider")
    return Response(status_code=204)


routes = [
    Route("/api/providers/{provider}/credentials", put_credentials, methods=["PUT"]),
    Route("/api/providers/{provider}/credentials", get_credentials, methods=["GET"]),
    Route("/api/providers/{provider}/credentials", delete_credentials, methods=["DELETE"]),
]
