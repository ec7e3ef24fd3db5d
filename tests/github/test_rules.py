"""The pure GitHub decisions, by table."""

from __future__ import annotations

import pytest

from control_plane.github.rules import (
    LinkFacts,
    app_jwt_claims,
    parse_installation_id,
    parse_repository,
    pull_request_refusal,
    repository_access,
    reusable,
)


@pytest.mark.parametrize("now", [0.0, 1_700_000_000.4, 1_700_000_059.9])
def test_app_jwt_claims_keep_github_s_ten_minute_rule(now: float) -> None:
    claims = app_jwt_claims(4711, now)
    assert claims["iss"] == "4711"
    iat, exp = int(claims["iat"]), int(claims["exp"])
    assert iat <= now - 59  # backdated against clock drift
    assert exp > now + 400  # long enough for a call and its retries
    assert exp - iat <= 600  # GitHub refuses more


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("acme/widgets", True),
        ("a/b", True),
        ("Acme-Co/my.repo_1", True),
        ("acme/widgets.git", False),
        ("acme", False),
        ("acme/", False),
        ("/widgets", False),
        ("-acme/widgets", False),
        ("acme/wid/gets", False),
        ("acme/..", False),
        ("acme/.", False),
        ("ac me/widgets", False),
        ("acme/wid%2fgets", False),
        ("a" * 40 + "/x", False),
        ("acme/" + "x" * 101, False),
    ],
)
def test_repository_names(text: str, ok: bool) -> None:
    if ok:
        assert parse_repository(text).full_name == text
    else:
        with pytest.raises(ValueError, match="not a GitHub repository"):
            parse_repository(text)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (31337, True),
        ("31337", True),
        ("0", False),
        (0, False),
        (-1, False),
        ("1e3", False),
        ("12:34", False),
        ("", False),
        (True, False),
        (2**63, False),
        ("\uff11", False),  # a full-width digit: isdigit() says yes
    ],
)
def test_installation_ids(value: int | str, ok: bool) -> None:
    if ok:
        assert parse_installation_id(value) == str(value)
    else:
        with pytest.raises(ValueError, match="not a GitHub installation id"):
            parse_installation_id(value)


PROVEN = LinkFacts("alice:31337", "31337", proven=True)
UNPROVEN = LinkFacts("alice:31337", "31337", proven=False)
ELSEWHERE = LinkFacts("alice:90001", "90001", proven=True)


@pytest.mark.parametrize(
    ("holder", "links", "granted", "reason"),
    [
        ("31337", [PROVEN], PROVEN, None),
        ("31337", [ELSEWHERE, PROVEN], PROVEN, None),
        ("31337", [UNPROVEN], None, "is not proven"),
        ("31337", [ELSEWHERE], None, "has no link to GitHub installation 31337"),
        ("31337", [], None, "has no link"),
        (None, [PROVEN], None, "not installed on acme/widgets"),
    ],
)
def test_repository_access(
    holder: str | None, links: list[LinkFacts], granted: LinkFacts | None, reason: str | None
) -> None:
    decision = repository_access("alice", "acme/widgets", holder, links)
    assert decision.link == granted
    if reason is None:
        assert decision.reason is None
    else:
        assert decision.reason is not None and reason in decision.reason


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        ("task/1", None),
        ("vm-agent/task-abc_1.2", None),
        ("main", "default branch"),
        ("../main", "not a branch name"),
        ("task//1", "not a branch name"),
        ("task/1/", "not a branch name"),
        ("task/.hidden", "not a branch name"),
        ("task.lock", "not a branch name"),
        ("-f", "not a branch name"),
        ("a b", "not a branch name"),
        ("refs/heads/x:main", "not a branch name"),
        ("x" * 201, "not a branch name"),
    ],
)
def test_pull_request_heads(head: str, reason: str | None) -> None:
    got = pull_request_refusal(head, "main")
    assert got is None if reason is None else (got is not None and reason in got)


@pytest.mark.parametrize(
    ("left_s", "again"),
    [(3600, True), (601, True), (600, True), (599.9, False), (0, False), (-5, False)],
)
def test_a_token_is_handed_out_again_only_with_ten_minutes_left(left_s: float, again: bool) -> None:
    assert reusable(1000.0 + left_s, 1000.0) is again
