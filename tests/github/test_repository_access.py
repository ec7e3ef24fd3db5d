"""A task's repository: granted only through the user's proven link to the installation
GitHub says holds it; refused with the reason otherwise (before any VM is made)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from control_plane.github import access
from control_plane.github import links as github_links
from control_plane.github.app import GitHubApp, app_from_settings
from control_plane.settings import ControlPlaneSettings
from tests.github.conftest import ACME, OTHER, Hub

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def proven(by: str) -> github_links.Proof:
    return github_links.Proof("github-user", by, time.time())


@pytest.fixture
def app(cp_settings: ControlPlaneSettings) -> GitHubApp:
    made = app_from_settings(cp_settings, time.time)
    assert made is not None
    return made


async def refused(engine: Engine, app: GitHubApp, user: str, repo: str) -> tuple[int, str]:
    with pytest.raises(access.RepositoryRefusedError) as caught:
        await access.repository_access(engine, app, user, repo)
    return caught.value.status, caught.value.reason


async def test_each_user_of_one_organisation_gets_their_own_grant(
    engine: Engine, app: GitHubApp, hub: Hub
) -> None:
    for user in ("alice", "bob"):
        github_links.link_installation(engine, user, str(ACME), "acme", proven(user))
    grants = [
        await access.repository_access(engine, app, u, "acme/widgets") for u in ("alice", "bob")
    ]
    assert [(g.user_id, g.link_storage_id, g.installation_id) for g in grants] == [
        ("alice", f"alice:{ACME}", str(ACME)),
        ("bob", f"bob:{ACME}", str(ACME)),
    ]
    # GitHub was asked which installation holds the repository, as the App.
    asked = [(c.path, c.auth) for c in hub.state.calls]
    assert asked == [("/repos/acme/widgets/installation", "app-jwt")] * 2


async def test_refusals_say_why(engine: Engine, app: GitHubApp, hub: Hub) -> None:
    github_links.link_installation(engine, "alice", str(ACME), "acme", proven("alice"))
    github_links.link_installation(engine, "carol", str(ACME), "acme")  # unproven
    cases = [
        ("dave", "acme/widgets", 403, f"has no link to GitHub installation {ACME}"),
        ("carol", "acme/widgets", 403, "is not proven"),
        ("alice", "globex/secret", 403, f"has no link to GitHub installation {OTHER}"),
        ("alice", "acme/nothing-here", 403, "not installed on acme/nothing-here"),
        ("alice", "acme/../../etc", 422, "not a GitHub repository"),
        ("alice", "acme", 422, "not a GitHub repository"),
    ]
    for user, repo, status, reason in cases:
        got_status, got_reason = await refused(engine, app, user, repo)
        assert got_status == status and reason in got_reason, (user, repo, got_reason)


async def test_github_down_is_503(engine: Engine, app: GitHubApp, hub: Hub) -> None:
    hub.state.fail_next("GET", "/repos/acme/widgets/installation", 500, times=app.api.attempts)
    status, reason = await refused(engine, app, "alice", "acme/widgets")
    assert status == 503 and "GitHub is unavailable" in reason


async def test_the_grant_is_kept_with_its_workspace(
    engine: Engine, app: GitHubApp, tmp_path: Path
) -> None:
    github_links.link_installation(engine, "alice", str(ACME), "acme", proven("alice"))
    grant = await access.repository_access(engine, app, "alice", "acme/widgets")
    with engine.begin() as conn:
        access.record_workspace_repository(conn, "ws-1", grant, 1.0)
    assert access.workspace_repository(engine, "ws-1") == grant
    assert access.workspace_repository(engine, "ws-2") is None
    assert access.grant_still_holds(engine, grant)
