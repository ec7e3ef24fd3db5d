"""Proofs on installation links, in the store (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from control_plane.github import links as github_links

PROOF = github_links.Proof("github-user", "alice-gh", 1000.0)


def test_a_proof_is_stored_and_read_back(engine: Engine) -> None:
    made = github_links.link_installation(engine, "alice", "31337", "acme", PROOF)
    assert made.proven
    (read,) = github_links.links_for_user(engine, "alice")
    assert read == made
    with pytest.raises(github_links.AlreadyLinkedError):
        github_links.link_installation(engine, "alice", "31337", "acme", PROOF)


def test_an_unproven_link_is_proven_once(engine: Engine) -> None:
    github_links.link_installation(engine, "bob", "31337", "typed")
    (before,) = github_links.links_for_user(engine, "bob")
    assert not before.proven
    admin = github_links.Proof("admin", "root", 2000.0)
    after = github_links.link_installation(engine, "bob", "31337", "acme", admin)
    assert (after.storage_id, after.proof, after.account_login) == ("bob:31337", admin, "acme")
    assert github_links.links_for_user(engine, "bob") == [after]
    with pytest.raises(github_links.AlreadyLinkedError):
        github_links.link_installation(engine, "bob", "31337", "acme", PROOF)


def test_unknown_proof_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown proof"):
        github_links.Proof("self-asserted", "x", 1.0)
