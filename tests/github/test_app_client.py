"""The control plane's GitHub App client against the stand-in: the JWT it signs, tokens by
the external id scoped to one repository, retries, and where its secrets never go."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from control_plane.github.app import (
    AppKeyError,
    GitHubApi,
    GitHubApp,
    GitHubError,
    GitHubUnavailableError,
    app_from_settings,
    load_app_key,
    user_installations,
)
from control_plane.github.rules import parse_repository
from control_plane.settings import ControlPlaneSettings
from tests.clock import FakeClock
from tests.github.conftest import ACME, APP_ID, OTHER, Hub, git, pem, remote

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
WIDGETS = parse_repository("acme/widgets")


def settings_for(tmp_path: Path, hub_url: str, **extra: object) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        state_dir=tmp_path / "cp",
        public_url="http://127.0.0.1:1",
        github_api_url=hub_url,
        github_max_wait_s=0.05,
        **extra,  # type: ignore[arg-type]
    )


def key_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "app-key.pem"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def make_app(hub: Hub, tmp_path: Path) -> GitHubApp:
    settings = settings_for(
        tmp_path,
        hub.url,
        github_app_id=APP_ID,
        github_app_private_key_file=key_file(tmp_path, hub.app_key_pem),
    )
    app = app_from_settings(settings, time.time)
    assert app is not None
    return app


async def test_token_by_external_id_for_one_repository(hub: Hub, tmp_path: Path) -> None:
    app = make_app(hub, tmp_path)
    token = await app.installation_token(str(ACME), WIDGETS)
    assert token.repositories == ("acme/widgets",)
    assert token.permissions == {"contents": "write", "pull_requests": "write"}
    assert 3500 < token.expires_at - time.time() <= 3600
    (call,) = [c for c in hub.state.calls if c.path.endswith("/access_tokens")]
    assert (call.path, call.auth, call.status) == (
        f"/app/installations/{ACME}/access_tokens",
        "app-jwt",
        201,
    )
    issued = hub.state.tokens[token.token]
    assert issued.repository_ids == {hub.state.repository("acme/widgets").id}
    assert token.token not in repr(token) and "PRIVATE" not in repr(app)

    # The token clones its repository and nothing else of the installation.
    await git("clone", "-q", remote(hub.url, token.token, "acme/widgets"), "w", cwd=tmp_path)
    done = await git(
        "clone", "-q", remote(hub.url, token.token, "acme/gadgets"), "g", cwd=tmp_path, check=False
    )
    assert done.returncode != 0


async def test_refusals_are_github_errors_and_not_retried(hub: Hub, tmp_path: Path) -> None:
    app = make_app(hub, tmp_path)
    with pytest.raises(GitHubError) as caught:
        await app.installation_token(str(ACME), parse_repository("globex/secret"))
    assert caught.value.status == 422
    with pytest.raises(GitHubError) as caught:
        await app.installation_token(str(ACME), WIDGETS, {"administration": "write"})
    assert caught.value.status == 422
    assert await app.installation("424242") is None
    assert await app.repository_installation(parse_repository("acme/nope")) is None
    assert await app.repository_installation(WIDGETS) == str(ACME)
    assert await app.repository_installation(parse_repository("globex/secret")) == str(OTHER)
    token_calls = [c for c in hub.state.calls if c.path.endswith("/access_tokens")]
    assert [c.status for c in token_calls] == [422, 422]


async def test_5xx_and_429_are_retried_then_given_up(hub: Hub, tmp_path: Path) -> None:
    app = make_app(hub, tmp_path)
    path = f"/app/installations/{ACME}/access_tokens"
    hub.state.fail_next("POST", path, 502)
    hub.state.fail_next("POST", path, 429, retry_after="0")
    token = await app.installation_token(str(ACME), WIDGETS)
    assert [c.status for c in hub.state.calls if c.path == path] == [502, 429, 201]
    assert token.token in hub.state.tokens

    hub.state.fail_next("POST", path, 503, times=app.api.attempts)
    with pytest.raises(GitHubUnavailableError) as caught:
        await app.installation_token(str(ACME), WIDGETS)
    assert caught.value.status == 503
    assert [c.status for c in hub.state.calls if c.path == path][3:] == [503] * app.api.attempts


async def test_github_unreachable_is_unavailable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = GitHubApi(f"http://127.0.0.1:{port}", attempts=2, max_wait_s=0.01)
    with pytest.raises(GitHubUnavailableError, match="unreachable"):
        await user_installations(api, "ghu_x")


async def test_user_installations_pages(hub: Hub) -> None:
    ids = tuple(range(1000, 1250))
    for i in ids:
        hub.state.add_installation(i, f"org{i}")
    token = hub.state.add_user_token("alice", (ACME, *ids))
    found = await user_installations(GitHubApi(hub.url), token)
    assert [x["id"] for x in found] == [ACME, *ids]
    pages = [c.query for c in hub.state.calls if c.path == "/user/installations"]
    assert pages == [f"per_page=100&page={n}" for n in (1, 2, 3)]
    with pytest.raises(GitHubError) as caught:
        await user_installations(GitHubApi(hub.url), "ghu_unknown")
    assert caught.value.status == 401


async def test_secrets_never_reach_logs(
    hub: Hub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(hub, tmp_path)
    token = await app.installation_token(str(ACME), WIDGETS)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert token.token not in logged
    assert app.app_jwt().split(".")[0] not in logged
    assert "PRIVATE KEY" not in logged


def test_the_key_file_must_be_private(tmp_path: Path, app_key: rsa.RSAPrivateKey) -> None:
    open_file = key_file(tmp_path, pem(app_key), mode=0o644)
    settings = settings_for(
        tmp_path, "http://127.0.0.1:9", github_app_id=1, github_app_private_key_file=open_file
    )
    with pytest.raises(AppKeyError, match="open to group or others") as caught:
        load_app_key(settings)
    assert "PRIVATE" not in str(caught.value)
    open_file.write_text("not a key")
    open_file.chmod(0o600)
    with pytest.raises(AppKeyError, match="not an unencrypted PEM"):
        load_app_key(settings)
    # A key without an App id, or an id without a key, is a mistake said at start.
    with pytest.raises(AppKeyError, match="needs both"):
        app_from_settings(settings_for(tmp_path, "http://127.0.0.1:9", github_app_id=1), time.time)
    assert app_from_settings(settings_for(tmp_path, "http://127.0.0.1:9"), time.time) is None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.github.com", True),
        ("https://ghe.example.com/api/v3/", True),
        ("http://127.0.0.1:8080", True),
        ("http://[::1]:8080", True),
        ("http://api.github.com", False),
        ("ftp://127.0.0.1", False),
        ("https://api.github.com/?x=1", False),
    ],
)
def test_github_api_url(tmp_path: Path, url: str, ok: bool) -> None:
    if ok:
        assert settings_for(tmp_path, url).github_api_url == url.rstrip("/")
    else:
        with pytest.raises(ValueError, match="github_api_url"):
            settings_for(tmp_path, url)


async def test_a_workspace_s_token_is_reused_while_it_has_ten_minutes(
    hub: Hub, tmp_path: Path
) -> None:
    clock = FakeClock(float(int(time.time())))  # GitHub's expires_at is in whole seconds
    hub.state.clock = clock  # GitHub's clock and ours move together
    app = make_app(hub, tmp_path)
    app.clock = clock
    first = await app.workspace_token("ws-1", str(ACME), WIDGETS)
    assert await app.workspace_token("ws-1", str(ACME), WIDGETS) is first
    other = await app.workspace_token("ws-2", str(ACME), WIDGETS)
    assert other.token != first.token  # never shared between workspaces
    clock.advance(3600 - 600)
    assert await app.workspace_token("ws-1", str(ACME), WIDGETS) is first
    clock.advance(1)
    renewed = await app.workspace_token("ws-1", str(ACME), WIDGETS)
    assert renewed.token != first.token and renewed.expires_at > first.expires_at
    minted = [c for c in hub.state.calls if c.path.endswith("/access_tokens")]
    assert len(minted) == 3
