"""GitHub installation links of the calling user (user tokens only)."""

from __future__ import annotations

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.github import links as github_links


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # As long as their columns (external_installation_id 64, account_login 255).
    installation_id: int | str = Field(alias="installationId")
    account_login: str | None = Field(default=None, alias="accountLogin", max_length=255)

    @field_validator("installation_id")
    @classmethod
    def _bounded(cls, value: int | str) -> int | str:
        if len(str(value)) > 64 or (isinstance(value, int) and value < 0):
            raise ValueError("must be at most 64 characters (a GitHub installation id)")
        return value


async def link(request: Request) -> JSONResponse:
    claims = require_user(request)
    assert claims.sub is not None
    body = await parse_body(request, LinkBody)
    plane = plane_of(request)
    try:
        made = await to_thread.run_sync(
            github_links.link_installation,
            plane.engine,
            claims.sub,
            str(body.installation_id),
            body.account_login,
        )
    except github_links.AlreadyLinkedError as exc:
        raise ApiError(409, str(exc)) from exc
    except ValueError as exc:
        raise ApiError(422, str(exc)) from exc
    return JSONResponse(made.to_api(), status_code=201)


async def list_links(request: Request) -> JSONResponse:
    claims = require_user(request)
    assert claims.sub is not None
    links = await to_thread.run_sync(
        github_links.links_for_user, plane_of(request).engine, claims.sub
    )
    return JSONResponse({"installations": [x.to_api() for x in links]})


routes = [
    Route("/api/github/installations", link, methods=["POST"]),
    Route("/api/github/installations", list_links, methods=["GET"]),
]
