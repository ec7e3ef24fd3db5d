"""The GitHub App client: the App's JWT, installation tokens, the calls the control plane makes.

PyJWT and httpx (both already dependencies) rather than githubkit: the five calls we make
do not justify githubkit's generated schema package (3,350 modules, 20 MB of source) on
every `mypy --strict` run. Retries on 5xx, 429 and network errors go through tenacity,
honouring `Retry-After`.

Installation tokens are always asked for by the installation's GitHub (external) id,
scoped to one repository and to WORKSPACE_PERMISSIONS. Nothing here logs a token or the
key; `repr` of what holds them shows neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from control_plane.github.rules import (
    TOKEN_CACHE_SIZE,
    WORKSPACE_PERMISSIONS,
    RepositoryName,
    app_jwt_claims,
    parse_installation_id,
    reusable,
)
from control_plane.settings import ControlPlaneSettings
from vm_agent.common.private_files import FileUnusable, NotPrivate, read_private

Clock = Callable[[], float]
ACCEPT = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class GitHubError(Exception):
    """GitHub refused (a 4xx) or could not be reached; `status` is GitHub's, or 0."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"GitHub answered {status}: {message}" if status else message)
        self.status = status
        self.message = message


class GitHubUnavailableError(GitHubError):
    """5xx, 429 or a network error, still so after the retries."""


class _Retryable(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class AppKeyError(ValueError):
    pass


@dataclass(frozen=True)
class AppKey:
    """The App's RSA private key; its repr never shows it."""

    key: RSAPrivateKey = field(repr=False)


def load_app_key(settings: ControlPlaneSettings) -> AppKey | None:
    """The App's key from the file (only its owner may read it) or the setting; None if
    neither is set. AppKeyError says what is wrong, never what the key is."""
    path = settings.github_app_private_key_file
    if path is not None:
        try:
            pem = read_private(path, "GitHub App key file")
        except NotPrivate as exc:
            raise AppKeyError(
                f"GitHub App key file {path} is open to group or others ({exc}): make it 0600"
            ) from None
        except FileUnusable as exc:
            raise AppKeyError(str(exc)) from None
    elif settings.github_app_private_key is not None:
        pem = settings.github_app_private_key.get_secret_value().encode()
    else:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise AppKeyError("GitHub App key is not an unencrypted PEM private key") from exc
    if not isinstance(key, RSAPrivateKey):
        raise AppKeyError("GitHub App key is not an RSA key (GitHub signs Apps with RS256)")
    return AppKey(key)


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: float
    installation_id: str
    repositories: tuple[str, ...]
    permissions: dict[str, str]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:300]
    return response.reason_phrase


class GitHubApi:
    """GitHub's REST API at `base_url`, with retries."""

    def __init__(self, base_url: str, *, attempts: int = 4, max_wait_s: float = 8.0) -> None:
        self.base_url = base_url
        self.attempts = attempts
        self.max_wait_s = max_wait_s

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_wait_s)
        backoff = wait_random_exponential(multiplier=0.25, max=self.max_wait_s)
        return float(backoff(state))

    async def request(
        self,
        method: str,
        path: str,
        authorization: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One call; 2xx and 4xx come back, 5xx/429/network errors are retried, then raise
        GitHubUnavailableError."""
        headers = {**ACCEPT, "Authorization": authorization}
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            reraise=True,
        )
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=15) as client:
                async for attempt in retrying:
                    with attempt:
                        try:
                            response = await client.request(
                                method, path, headers=headers, json=json, params=params
                            )
                        except httpx.TransportError as exc:
                            raise _Retryable(0, f"GitHub unreachable: {exc}", None) from exc
                        if response.status_code >= 500 or response.status_code == 429:
                            raise _Retryable(
                                response.status_code, _message(response), _retry_after(response)
                            )
                        return response
        except _Retryable as exc:
            raise GitHubUnavailableError(exc.status, exc.message) from exc
        raise AssertionError("unreachable: tenacity re-raises the last failure")


class GitHubApp:
    """The control plane acting as its GitHub App."""

    def __init__(self, app_id: int, key: AppKey, api: GitHubApi, clock: Clock) -> None:
        self.app_id = app_id
        self._key = key
        self.api = api
        self.clock = clock
        # (workspace id, permissions) -> its token: never shared between two workspaces
        self._workspace_tokens: dict[tuple[str, str], InstallationToken] = {}

    def __repr__(self) -> str:
        return f"GitHubApp(app_id={self.app_id}, api={self.api.base_url!r})"

    def app_jwt(self) -> str:
        return jwt.encode(app_jwt_claims(self.app_id, self.clock()), self._key.key, "RS256")

    async def _as_app(
        self, method: str, path: str, json: dict[str, Any] | None = None
    ) -> httpx.Response:
        return await self.api.request(method, path, f"Bearer {self.app_jwt()}", json=json)

    async def installation(self, installation_id: str) -> dict[str, Any] | None:
        """GitHub's installation `installation_id` (external) of this App, or None."""
        gid = parse_installation_id(installation_id)
        response = await self._as_app("GET", f"/app/installations/{gid}")
        if response.status_code == 404:
            return None
        return json_object(response)

    async def repository_installation(self, repo: RepositoryName) -> str | None:
        """The GitHub id of this App's installation that holds `repo`, or None."""
        response = await self._as_app("GET", f"/repos/{repo.owner}/{repo.name}/installation")
        if response.status_code == 404:
            return None
        return parse_installation_id(json_object(response).get("id", ""))

    async def installation_token(
        self,
        installation_id: str,
        repo: RepositoryName,
        permissions: dict[str, str] | None = None,
    ) -> InstallationToken:
        """A token of installation `installation_id` (GitHub's id, never a storage key) for
        `repo` alone, with `permissions` (the workspace's by default)."""
        gid = parse_installation_id(installation_id)
        wanted = dict(permissions or WORKSPACE_PERMISSIONS)
        response = await self._as_app(
            "POST",
            f"/app/installations/{gid}/access_tokens",
            {"repositories": [repo.name], "permissions": wanted},
        )
        body = json_object(response, expect=201)
        names = tuple(
            str(r.get("full_name")) for r in body.get("repositories") or [] if isinstance(r, dict)
        )
        granted = body.get("permissions")
        # The token must be exactly what was asked: one repository, no more permissions.
        one = tuple(n.lower() for n in names) == (repo.full_name.lower(),)
        if not one or not isinstance(granted, dict) or granted != wanted:
            raise GitHubError(0, f"GitHub granted another scope than asked for {repo.full_name}")
        try:
            expires = datetime.fromisoformat(str(body["expires_at"])).timestamp()
            token = str(body["token"])
        except (KeyError, ValueError) as exc:
            raise GitHubError(0, "GitHub's token answer lacks token or expires_at") from exc
        return InstallationToken(token, expires, gid, names, wanted)

    async def workspace_token(
        self,
        workspace_id: str,
        installation_id: str,
        repo: RepositoryName,
        permissions: dict[str, str] | None = None,
    ) -> InstallationToken:
        """The workspace's token for `repo` with `permissions` (WORKSPACE_PERMISSIONS by
        default): the one handed out before while it has TOKEN_REUSE_MARGIN_S to live (git
        asks on every fetch and push), else a new one. Each workspace has its own, and a
        read token is never a write one: a token is never shared between two."""
        wanted = dict(permissions or WORKSPACE_PERMISSIONS)
        key = (workspace_id, ",".join(f"{k}={v}" for k, v in sorted(wanted.items())))
        held = self._workspace_tokens.get(key)
        if (
            held is not None
            and held.installation_id == installation_id
            and [n.lower() for n in held.repositories] == [repo.full_name.lower()]
            and held.permissions == wanted
            and reusable(held.expires_at, self.clock())
        ):
            return held
        token = await self.installation_token(installation_id, repo, wanted)
        self._workspace_tokens.pop(key, None)
        while len(self._workspace_tokens) >= TOKEN_CACHE_SIZE:
            self._workspace_tokens.pop(next(iter(self._workspace_tokens)))  # the oldest
        self._workspace_tokens[key] = token
        return token


async def user_login(api: GitHubApi, user_token: str) -> str:
    """The GitHub login of the holder of `user_token`."""
    body = json_object(await api.request("GET", "/user", f"Bearer {user_token}"))
    login = body.get("login")
    if not isinstance(login, str) or not login:
        raise GitHubError(0, "GitHub's /user answer has no login")
    return login


async def user_installations(api: GitHubApi, user_token: str) -> list[dict[str, Any]]:
    """The App's installations the holder of `user_token` (the App's OAuth flow's user
    access token) may access, every page."""
    found: list[dict[str, Any]] = []
    for page in range(1, 101):
        response = await api.request(
            "GET",
            "/user/installations",
            f"Bearer {user_token}",
            params={"per_page": "100", "page": str(page)},
        )
        body = json_object(response)
        batch = [x for x in body.get("installations") or [] if isinstance(x, dict)]
        found.extend(batch)
        total = body.get("total_count")
        if len(batch) < 100 or not isinstance(total, int) or len(found) >= total:
            break
    return found


def json_object(response: httpx.Response, expect: int = 200) -> dict[str, Any]:
    if response.status_code != expect:
        raise GitHubError(response.status_code, _message(response))
    try:
        body = response.json()
    except ValueError as exc:
        raise GitHubError(0, "GitHub's answer is not JSON") from exc
    if not isinstance(body, dict):
        raise GitHubError(0, "GitHub's answer is not a JSON object")
    return body


def app_from_settings(settings: ControlPlaneSettings, clock: Clock) -> GitHubApp | None:
    """The App, if one is configured (id and key); AppKeyError if half or badly."""
    key = load_app_key(settings)
    if (key is None) != (settings.github_app_id is None):
        raise AppKeyError("a GitHub App needs both CONTROL_PLANE_GITHUB_APP_ID and its key")
    if key is None or settings.github_app_id is None:
        return None
    return GitHubApp(settings.github_app_id, key, api_from_settings(settings), clock)


def api_from_settings(settings: ControlPlaneSettings) -> GitHubApi:
    return GitHubApi(
        settings.github_api_url,
        attempts=settings.github_attempts,
        max_wait_s=settings.github_max_wait_s,
    )
