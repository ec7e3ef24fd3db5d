"""The stand-in's HTTP app: GitHub's REST calls the control plane makes, and git over HTTP.

Run it with `serve(state)` inside the caller's task group; its base URL is the API's
(`{url}/app/...`) and the git remote's (`{url}/{owner}/{name}.git`) at once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control_plane.app import bind_socket
from control_plane.serving import uvicorn_serving
from tests.github_standin.git_http import serve_git
from tests.github_standin.state import (
    APP_JWT_MAX_S,
    Call,
    GitHubStandIn,
    InstallationToken,
    Repository,
    StandInError,
    UserToken,
)

Handler = Callable[[GitHubStandIn, Request], Awaitable[Response]]
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="GitHub"'}


def _credential(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "token") or not value.strip():
        request.state.auth = "none"
        raise StandInError(401, "Requires authentication")
    return value.strip()


def app_jwt(state: GitHubStandIn, request: Request) -> None:
    """The App's JWT, checked as GitHub does: RS256 by the App's key, `iss` the App,
    `iat` not in the future (60 s of drift), `exp` in the future and at most 10 minutes
    after `iat`."""
    token = _credential(request)
    request.state.auth = "bad"
    try:
        if jwt.get_unverified_header(token).get("alg") != "RS256":
            raise StandInError(401, "A JSON web token could not be decoded")
        claims = jwt.decode(
            token,
            state.app_public_key,
            algorithms=["RS256"],
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["iat", "exp", "iss"],
            },
        )
    except jwt.InvalidTokenError as exc:
        raise StandInError(401, "A JSON web token could not be decoded") from exc
    now = state.clock()
    iat, exp = claims["iat"], claims["exp"]
    if str(claims["iss"]) != str(state.app_id):
        raise StandInError(401, "'Issuer' claim ('iss') must be an Integer")
    if not isinstance(iat, int) or iat > now + 60:
        raise StandInError(
            401,
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued",
        )
    if not isinstance(exp, int) or exp <= now:
        raise StandInError(
            401,
            "'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires",
        )
    if exp - iat > APP_JWT_MAX_S:
        raise StandInError(401, "'Expiration time' claim ('exp') is too far in the future")
    request.state.auth = "app-jwt"


def installation_token(state: GitHubStandIn, request: Request) -> InstallationToken | UserToken:
    token = _credential(request)
    found = state.tokens.get(token)
    if found is not None and state.clock() < found.expires_at:
        request.state.auth = "installation"
        return found
    user = state.user_tokens.get(token)
    if user is not None:
        request.state.auth = "user"
        return user
    request.state.auth = "bad"
    raise StandInError(401, "Bad credentials")


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise StandInError(400, "Problems parsing JSON") from exc
    if not isinstance(body, dict):
        raise StandInError(400, "Problems parsing JSON")
    return body


def _int(text: str) -> int:
    if not text.isdigit():
        raise StandInError(404, "Not Found")
    return int(text)


async def get_installation(state: GitHubStandIn, request: Request) -> Response:
    app_jwt(state, request)
    inst = state.installation(_int(request.path_params["installation_id"]))
    return JSONResponse(inst.to_api(state.app_id))


async def access_tokens(state: GitHubStandIn, request: Request) -> Response:
    app_jwt(state, request)
    installation_id = _int(request.path_params["installation_id"])
    body = await json_body(request)
    return JSONResponse(state.issue_token(installation_id, body), status_code=201)


async def repo_installation(state: GitHubStandIn, request: Request) -> Response:
    app_jwt(state, request)
    repo = state.repository(f"{request.path_params['owner']}/{request.path_params['repo']}")
    return JSONResponse(state.installation(repo.installation_id).to_api(state.app_id))


async def user_installations(state: GitHubStandIn, request: Request) -> Response:
    who = installation_token(state, request)
    if not isinstance(who, UserToken):
        raise StandInError(403, "Resource not accessible by integration")
    per_page = min(int(request.query_params.get("per_page", "30")), 100)
    page = max(int(request.query_params.get("page", "1")), 1)
    mine = [state.installations[i] for i in who.installation_ids if i in state.installations]
    chunk = mine[(page - 1) * per_page : page * per_page]
    return JSONResponse(
        {"total_count": len(mine), "installations": [i.to_api(state.app_id) for i in chunk]}
    )


async def get_user(state: GitHubStandIn, request: Request) -> Response:
    who = installation_token(state, request)
    if not isinstance(who, UserToken):
        raise StandInError(403, "Resource not accessible by integration")
    return JSONResponse({"login": who.login, "id": abs(hash(who.login)) % 10**8, "type": "User"})


def _may_see(state: GitHubStandIn, who: InstallationToken | UserToken, repo: Repository) -> bool:
    if isinstance(who, UserToken):
        return repo.installation_id in who.installation_ids
    return repo.id in who.repository_ids


async def get_repo(state: GitHubStandIn, request: Request) -> Response:
    who = installation_token(state, request)
    repo = state.repository(f"{request.path_params['owner']}/{request.path_params['repo']}")
    if not _may_see(state, who, repo):
        raise StandInError(404, "Not Found")
    return JSONResponse(repo.to_api(state.base_url))


async def create_pull(state: GitHubStandIn, request: Request) -> Response:
    who = installation_token(state, request)
    repo = state.repository(f"{request.path_params['owner']}/{request.path_params['repo']}")
    if not _may_see(state, who, repo):
        raise StandInError(404, "Not Found")
    if not isinstance(who, InstallationToken) or not who.allows(
        repo, "pull_requests", "write", state.clock()
    ):
        raise StandInError(403, "Resource not accessible by integration")
    body = await json_body(request)
    return JSONResponse(state.open_pull(repo, body), status_code=201)


async def list_pulls(state: GitHubStandIn, request: Request) -> Response:
    who = installation_token(state, request)
    repo = state.repository(f"{request.path_params['owner']}/{request.path_params['repo']}")
    if not _may_see(state, who, repo):
        raise StandInError(404, "Not Found")
    query = request.query_params
    return JSONResponse(state.list_pulls(repo, query.get("head"), query.get("base")))


def _basic_token(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        request.state.auth = "none"
        raise StandInError(401, "Authentication required", BASIC_CHALLENGE)
    try:
        _user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        request.state.auth = "bad"
        raise StandInError(401, "Invalid username or token", BASIC_CHALLENGE) from exc
    return password


async def git(state: GitHubStandIn, request: Request) -> Response:
    """git smart-HTTP: an installation token (basic auth, any user name) for this very
    repository, with contents read to fetch and contents write to push."""
    owner, name, rest = (request.path_params[k] for k in ("owner", "name", "rest"))
    if not name.endswith(".git"):
        raise StandInError(404, "Not Found")
    repo = state.repository(f"{owner}/{name.removesuffix('.git')}")
    token = state.tokens.get(_basic_token(request))
    now = state.clock()
    if token is None or now >= token.expires_at:
        request.state.auth = "bad"
        raise StandInError(401, "Invalid username or token", BASIC_CHALLENGE)
    request.state.auth = "basic"
    pushing = rest == "git-receive-pack" or request.query_params.get("service") == (
        "git-receive-pack"
    )
    if not token.allows(repo, "contents", "write" if pushing else "read", now):
        raise StandInError(403, f"Permission to {repo.full_name} denied")
    return await serve_git(request, state.root, f"/{owner}/{name}/{rest}", "x-access-token")


def _endpoint(state: GitHubStandIn, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        request.state.auth = "none"
        queued = state.faults.get((request.method, request.url.path))
        response: Response
        if queued:
            status, retry_after = queued.pop(0)
            headers = {"Retry-After": retry_after} if retry_after is not None else None
            response = JSONResponse({"message": "Server Error"}, status, headers=headers)
        else:
            try:
                response = await handler(state, request)
            except StandInError as exc:
                body = {"message": exc.message, "status": str(exc.status)}
                response = JSONResponse(body, exc.status, headers=exc.headers)
        state.calls.append(
            Call(
                request.method,
                request.url.path,
                request.url.query,
                request.state.auth,
                response.status_code,
            )
        )
        return response

    return endpoint


def make_app(state: GitHubStandIn) -> Starlette:
    table: list[tuple[str, Handler, list[str]]] = [
        ("/app/installations/{installation_id}", get_installation, ["GET"]),
        ("/app/installations/{installation_id}/access_tokens", access_tokens, ["POST"]),
        ("/repos/{owner}/{repo}/installation", repo_installation, ["GET"]),
        ("/repos/{owner}/{repo}/pulls", create_pull, ["POST"]),
        ("/repos/{owner}/{repo}/pulls", list_pulls, ["GET"]),
        ("/repos/{owner}/{repo}", get_repo, ["GET"]),
        ("/user/installations", user_installations, ["GET"]),
        ("/user", get_user, ["GET"]),
        ("/{owner}/{name}/{rest:path}", git, ["GET", "POST"]),
    ]
    return Starlette(routes=[Route(p, _endpoint(state, h), methods=m) for p, h, m in table])


@contextlib.asynccontextmanager
async def serve(state: GitHubStandIn) -> AsyncIterator[str]:
    """Serve the stand-in on 127.0.0.1 until the block exits; yields its base URL."""
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    state.base_url = url
    config = uvicorn.Config(make_app(state), log_level="warning", lifespan="off")
    try:
        async with uvicorn_serving(config, [sock], "GitHub stand-in"):
            yield url
    finally:
        sock.close()
