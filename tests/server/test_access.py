"""Who may call what on whose session, as tables (pure)."""

from __future__ import annotations

import pytest

from vm_agent.server.access import (
    READ_METHODS,
    WRITE_METHODS,
    Denied,
    Grant,
    check_method,
    check_reach,
    may_reach,
    owner_at_start,
)

READER = Grant("alice", read=True, write=False, node=False)
WRITER = Grant("alice", read=True, write=True, node=False)
WRITE_ONLY = Grant("alice", read=False, write=True, node=False)
NOBODY = Grant("alice", read=False, write=False, node=False)
NODE = Grant("control-plane", read=False, write=False, node=True)


@pytest.mark.parametrize(
    ("grant", "method", "allowed"),
    [(READER, m, True) for m in READ_METHODS]
    + [(READER, m, False) for m in WRITE_METHODS]
    + [(WRITER, m, True) for m in READ_METHODS | WRITE_METHODS]
    + [(WRITE_ONLY, m, True) for m in READ_METHODS | WRITE_METHODS]
    + [(NOBODY, m, False) for m in READ_METHODS | WRITE_METHODS]
    + [(NODE, m, True) for m in READ_METHODS | WRITE_METHODS]
    + [(READER, "auth", True), (NOBODY, "no/such", True)],  # unknown: the router answers
)
def test_methods_by_scope(grant: Grant, method: str, allowed: bool) -> None:
    if allowed:
        check_method(method, grant)
    else:
        with pytest.raises(Denied, match=f"forbidden: {method} needs the"):
            check_method(method, grant)


@pytest.mark.parametrize(
    ("grant", "owner", "reach"),
    [
        (WRITER, "alice", True),
        (READER, "alice", True),
        (WRITER, "bob", False),
        (WRITER, None, False),  # the node's own session
        (WRITER, "Alice", False),  # subjects are compared exactly
        (NODE, "alice", True),
        (NODE, None, True),
        (Grant("", read=True, write=True, node=False), "", True),
    ],
)
def test_reach_by_owner(grant: Grant, owner: str | None, reach: bool) -> None:
    assert may_reach(grant, owner) is reach
    if reach:
        check_reach(grant, owner, "s1")
    else:
        with pytest.raises(Denied, match="'s1' belongs to another user"):
            check_reach(grant, owner, "s1")


@pytest.mark.parametrize(
    ("grant", "requested", "owner"),
    [
        (WRITER, None, "alice"),
        (WRITER, "alice", "alice"),
        (WRITER, "bob", Denied),
        (NODE, "bob", "bob"),
        (NODE, None, None),
    ],
)
def test_owner_at_start(grant: Grant, requested: str | None, owner: object) -> None:
    if owner is Denied:
        with pytest.raises(Denied, match="only the 'node' scope"):
            owner_at_start(grant, requested)
    else:
        assert owner_at_start(grant, requested) == owner
