"""Issue 28 item 13: a GitHub installation link must be proven (a user token GitHub
accepts for that installation, or an admin's confirmation); unproven is 403 with the
reason and nothing stored. Over HTTP, on SQLite and PostgreSQL, against the stand-in."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert

from control_plane.github import links as github_links
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import github_installations
from tests.control_plane.harness import Running, running
from tests.github.conftest import ACME, OTHER, Hub

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
PATH = "/api/github/installations"


async def listed(cp: Running, user: str) -> list[dict[str, Any]]:
    r = await cp.client.get(PATH, headers=cp.user(user))
    assert r.status_code == 200
    found: list[dict[str, Any]] = r.json()["installations"]
    return found


async def test_an_unproven_link_is_refused_and_nothing_stored(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    mallory = hub.state.add_user_token("mallory", (OTHER,))
    async with running(cp_settings) as cp:
        attempts: list[tuple[dict[str, Any], str]] = [
            ({"installationId": ACME}, "unproven link"),
            ({"installationId": ACME, "githubUserToken": "ghu_forged"}, "refused the user token"),
            ({"installationId": ACME, "githubUserToken": mallory}, "cannot access installation"),
        ]
        for body, reason in attempts:
            r = await cp.client.post(PATH, json=body, headers=cp.user("mallory"))
            assert r.status_code == 403, r.text
            assert reason in r.json()["error"]
            assert mallory not in r.text
        assert await listed(cp, "mallory") == []
    # GitHub was asked with mallory's token, never with a storage key or the App's JWT.
    asked = [(c.path, c.auth, c.status) for c in hub.state.calls]
    assert ("/user/installations", "user", 200) in asked
    assert ("/user", "bad", 401) in asked


async def test_two_users_of_one_organisation_each_prove_their_own_link(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    async with running(cp_settings) as cp:
        for user in ("alice", "bob"):
            token = hub.state.add_user_token(f"{user}-gh", (OTHER, ACME))
            r = await cp.client.post(
                PATH, json={"installationId": ACME, "githubUserToken": token}, headers=cp.user(user)
            )
            assert r.status_code == 201, r.text
            # The account comes from GitHub's answer, not from the caller.
            assert r.json() == {
                "installationId": str(ACME),
                "accountLogin": "acme",
                "proven": True,
                "proof": "github-user",
            }
            assert token not in r.text
            again = await cp.client.post(
                PATH, json={"installationId": ACME, "githubUserToken": token}, headers=cp.user(user)
            )
            assert again.status_code == 409
        links = github_links.links_for_installation(cp.plane.engine, str(ACME))
        assert {(x.user_id, x.storage_id) for x in links} == {
            ("alice", f"alice:{ACME}"),
            ("bob", f"bob:{ACME}"),
        }
        assert {x.proof.by for x in links if x.proof} == {"alice-gh", "bob-gh"}


async def test_an_admin_confirms_a_link_the_app_can_see(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    path = f"{PATH}/{ACME}/confirm"
    async with running(cp_settings) as cp:
        r = await cp.client.post(path, json={"userId": "carol"}, headers=cp.user("carol"))
        assert (r.status_code, r.json()["error"]) == (403, "forbidden: admin scope required")
        r = await cp.client.post(
            f"{PATH}/4242/confirm", json={"userId": "carol"}, headers=cp.admin()
        )
        assert r.status_code == 422 and "knows no installation 4242" in r.json()["error"]
        r = await cp.client.post(path, json={"userId": "carol"}, headers=cp.admin())
        assert r.status_code == 201, r.text
        assert r.json()["proof"] == "admin"
        assert [x["proven"] for x in await listed(cp, "carol")] == [True]
        (link,) = github_links.links_for_user(cp.plane.engine, "carol")
        assert link.proof is not None and link.proof.by == "admin"
    (call,) = [c for c in hub.state.calls if c.path == f"/app/installations/{ACME}"]
    assert call.auth == "app-jwt"


async def test_an_older_unproven_link_is_proven_by_linking_again(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    async with running(cp_settings) as cp:
        with cp.plane.engine.begin() as conn:  # a row from before proofs: unproven
            conn.execute(
                insert(github_installations).values(
                    installation_id=str(ACME), user_id="dan", account_login="typed-by-dan"
                )
            )
        assert [x["proven"] for x in await listed(cp, "dan")] == [False]
        token = hub.state.add_user_token("dan-gh", (ACME,))
        r = await cp.client.post(
            PATH, json={"installationId": ACME, "githubUserToken": token}, headers=cp.user("dan")
        )
        assert r.status_code == 201, r.text
        assert await listed(cp, "dan") == [
            {
                "installationId": str(ACME),
                "accountLogin": "acme",
                "proven": True,
                "proof": "github-user",
            }
        ]


async def test_github_down_is_503_and_bad_input_422(
    cp_settings: ControlPlaneSettings, hub: Hub
) -> None:
    token = hub.state.add_user_token("erin-gh", (ACME,))
    async with running(cp_settings) as cp:
        hub.state.fail_next("GET", "/user", 502, times=cp_settings.github_attempts)
        r = await cp.client.post(
            PATH, json={"installationId": ACME, "githubUserToken": token}, headers=cp.user("erin")
        )
        assert r.status_code == 503 and "GitHub is unavailable" in r.json()["error"]
        assert await listed(cp, "erin") == []
        for bad in ("abc", "1:2", -1, 0, "31337/../1", 2**64):
            r = await cp.client.post(
                PATH,
                json={"installationId": bad, "githubUserToken": token},
                headers=cp.user("erin"),
            )
            # past 64 bits the strict body parser refuses it before the model sees it
            assert r.status_code == (400 if bad == 2**64 else 422), (bad, r.text)
        for bad_token in ("ghu_x\nX-Injected: 1", "ghu x", "", "ghu_é"):
            r = await cp.client.post(
                PATH,
                json={"installationId": ACME, "githubUserToken": bad_token},
                headers=cp.user("erin"),
            )
            assert r.status_code == 422, (bad_token, r.text)
        r = await cp.client.post(
            PATH, json={"installationId": ACME, "accountLogin": "acme"}, headers=cp.user("erin")
        )
        assert r.status_code == 422  # the account is GitHub's to say
        r = await cp.client.post(f"{PATH}/x1/confirm", json={"userId": "erin"}, headers=cp.admin())
        assert r.status_code == 422
        # None of it reached GitHub but the one call the 502s answered.
        assert {c.path for c in hub.state.calls} == {"/user"}
