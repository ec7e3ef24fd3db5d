"""GitHub installation links (user tokens), proven before they are stored.

A user links an installation by showing a GitHub user access token (the App's OAuth
flow's result): GitHub is asked which of the App's installations that user may access,
and only one of those is linked. An admin may instead confirm a link for a user, once
the App's own GitHub call shows the installation exists. The user's GitHub token is
used for those calls only: never stored, logged or answered.
"""

from __future__ import annotations

from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api.common import ApiError, parse_body, plane_of, require_user
from control_plane.github import links as github_links
from control_plane.github.app import (
    AppKeyError,
    GitHubApi,
    GitHubApp,
    GitHubError,
    GitHubUnavailableError,
    api_from_settings,
    app_from_settings,
    user_installations,
    user_login,
)
from control_plane.github.rules import parse_installation_id

UNPROVEN = (
    "unproven link: show a GitHub user token of the App's OAuth flow (githubUserToken) "
    "for an account that can access installation {gid}, or ask an admin to confirm the link"
)


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # As long as their columns (external_installation_id 64, account_login 255).
    installation_id: int | str = Field(alias="installationId")
    github_user_token: str | None = Field(
        default=None,
        alias="githubUserToken",
        # GitHub's tokens are of these characters; anything else could not be a header
        pattern=r"^[A-Za-z0-9_.-]{1,4096}$",
        repr=False,
    )


class ConfirmBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    user_id: str = Field(alias="userId", min_length=1, max_length=128)


def github_app_of(request: Request) -> GitHubApp:
    """The control plane's GitHub App (made once per app); 503 if none is configured."""
    state = request.app.state
    app = getattr(state, "github_app", None)
    if app is None:
        plane = plane_of(request)
        try:
            app = app_from_settings(plane.settings, plane.clock)
        except AppKeyError as exc:
            raise ApiError(503, f"the GitHub App is misconfigured: {exc}") from exc
        if app is None:
            raise ApiError(503, "no GitHub App is configured")
        state.github_app = app
    assert isinstance(app, GitHubApp)
    return app


def github_api_of(request: Request) -> GitHubApi:
    return api_from_settings(plane_of(request).settings)


def github_failure(exc: GitHubError, what: str) -> ApiError:
    if isinstance(exc, GitHubUnavailableError):
        return ApiError(503, f"GitHub is unavailable ({what}): {exc.message}")
    return ApiError(502, f"GitHub refused {what}: {exc.message}")


def _installation_id(value: int | str) -> str:
    try:
        return parse_installation_id(value)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from exc


async def _store(
    request: Request,
    user_id: str,
    gid: str,
    login: str | None,
    proof: github_links.Proof,
) -> JSONResponse:
    try:
        made = await to_thread.run_sync(
            github_links.link_installation, plane_of(request).engine, user_id, gid, login, proof
        )
    except github_links.AlreadyLinkedError as exc:
        raise ApiError(409, str(exc)) from exc
    return JSONResponse(made.to_api(), status_code=201)


async def link(request: Request) -> JSONResponse:
    claims = require_user(request)
    assert claims.sub is not None
    body = await parse_body(request, LinkBody)
    gid = _installation_id(body.installation_id)
    if body.github_user_token is None:
        raise ApiError(403, UNPROVEN.format(gid=gid))
    api = github_api_of(request)
    try:
        login = await user_login(api, body.github_user_token)
        reachable = await user_installations(api, body.github_user_token)
    except GitHubUnavailableError as exc:
        raise github_failure(exc, "the user token") from exc
    except GitHubError as exc:
        if exc.status in (401, 403):
            raise ApiError(403, "GitHub refused the user token (expired or revoked?)") from exc
        raise github_failure(exc, "the user token") from exc
    found = next((x for x in reachable if str(x.get("id")) == gid), None)
    if found is None:
        raise ApiError(
            403,
            f"GitHub says the account {login!r} cannot access installation {gid} of this "
            "App: " + UNPROVEN.format(gid=gid),
        )
    account = found.get("account")
    account_login = str(account.get("login")) if isinstance(account, dict) else None
    proof = github_links.Proof("github-user", login, plane_of(request).clock())
    return await _store(request, claims.sub, gid, account_login, proof)


async def confirm(request: Request) -> JSONResponse:
    """An admin links installation {installation_id} for a user; the App checks it exists."""
    claims = require_user(request, admin=True)
    assert claims.sub is not None
    gid = _installation_id(request.path_params["installation_id"])
    body = await parse_body(request, ConfirmBody)
    app = github_app_of(request)
    try:
        found = await app.installation(gid)
    except GitHubError as exc:
        raise github_failure(exc, "the installation") from exc
    if found is None:
        raise ApiError(422, f"GitHub knows no installation {gid} of this App")
    account = found.get("account")
    account_login = str(account.get("login")) if isinstance(account, dict) else None
    proof = github_links.Proof("admin", claims.sub, plane_of(request).clock())
    return await _store(request, body.user_id, gid, account_login, proof)


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
    Route("/api/github/installations/{installation_id}/confirm", confirm, methods=["POST"]),
]
