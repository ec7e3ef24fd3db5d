"""GitHub installation links: storage key vs GitHub id, several users, legacy rows."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, insert

from control_plane.github import links as github_links
from control_plane.storage.db import github_installations


def test_two_users_of_one_org_both_see_the_installation(engine: Engine) -> None:
    a = github_links.link_installation(engine, "alice", "4242", "acme")
    b = github_links.link_installation(engine, "bob", "4242", "acme")
    assert (a.storage_id, b.storage_id) == ("alice:4242", "bob:4242")
    for user in ("alice", "bob"):
        (link,) = github_links.links_for_user(engine, user)
        assert link.github_id == "4242"
        assert link.to_api() == {
            "installationId": "4242",
            "accountLogin": "acme",
            "proven": False,
            "proof": None,
        }
    assert len(github_links.links_for_installation(engine, "4242")) == 2


def test_same_user_linking_twice_is_refused(engine: Engine) -> None:
    github_links.link_installation(engine, "alice", "7", "acme")
    with pytest.raises(github_links.AlreadyLinkedError):
        github_links.link_installation(engine, "alice", "7", "acme")
    assert len(github_links.links_for_user(engine, "alice")) == 1


def test_legacy_row_without_external_id_keeps_working(engine: Engine) -> None:
    # A row written by old code after the migration ran: GitHub id in the storage key only.
    with engine.begin() as conn:
        conn.execute(
            insert(github_installations).values(
                installation_id="555", user_id="carol", account_login="legacy-org"
            )
        )
    (link,) = github_links.links_for_user(engine, "carol")
    assert link.external_installation_id is None
    assert link.github_id == "555"
    assert link.to_api()["installationId"] == "555"
    with pytest.raises(github_links.AlreadyLinkedError):
        github_links.link_installation(engine, "carol", "555")
    other = github_links.link_installation(engine, "dan", "555")
    assert other.github_id == "555"
    assert {x.user_id for x in github_links.links_for_installation(engine, "555")} == {
        "carol",
        "dan",
    }


def test_bad_github_id_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="bad GitHub"):
        github_links.link_installation(engine, "alice", "a:b")
