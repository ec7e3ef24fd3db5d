"""The pool and who gets which user: tables of cases (pure)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from vm_agent.containment.users import (
    AgentUser,
    PoolExhausted,
    PoolSpec,
    RunAs,
    assign,
    clean_table,
    decide_run_as,
)


def test_the_pool_of_contract_2() -> None:
    pool = PoolSpec(count=16, uid_base=61000)
    users = pool.users()
    assert len(users) == 16
    assert users[0] == AgentUser(
        "vm-agent-u0", 61000, 61000, PurePosixPath("/var/lib/vm-agent-homes/vm-agent-u0")
    )
    assert users[15].name == "vm-agent-u15" and users[15].uid == users[15].gid == 61015
    with pytest.raises(IndexError):
        pool.user(16)


@pytest.mark.parametrize(
    ("owner", "table", "count", "index", "after"),
    [
        ("alice", {}, 4, 0, {"alice": 0}),
        ("alice", {"alice": 2}, 4, 2, {"alice": 2}),  # keeps its user
        ("bob", {"alice": 0}, 4, 1, {"alice": 0, "bob": 1}),
        ("bob", {"alice": 1}, 4, 0, {"alice": 1, "bob": 0}),  # lowest free
        (None, {"alice": 0}, 4, 1, {"alice": 0, None: 1}),  # no owner is an owner too
        (None, {None: 3}, 4, 3, {None: 3}),
        # A pool made smaller: an index past it is forgotten, never shared.
        ("alice", {"alice": 7, "bob": 0}, 4, 1, {"bob": 0, "alice": 1}),
        # A damaged table that gives one index twice: the first holder keeps it.
        ("bob", {"alice": 0, "bob": 0}, 4, 1, {"alice": 0, "bob": 1}),
        ("carol", {"alice": -1}, 2, 0, {"carol": 0}),
    ],
)
def test_assign(
    owner: str | None,
    table: dict[str | None, int],
    count: int,
    index: int,
    after: dict[str | None, int],
) -> None:
    got, new_table = assign(owner, table, count)
    assert got == index
    assert new_table == after
    assert len(set(new_table.values())) == len(new_table)  # never two owners on one user


def test_an_exhausted_pool_refuses_a_newcomer_only() -> None:
    table: dict[str | None, int] = {"a": 0, "b": 1}
    with pytest.raises(PoolExhausted, match="VM_AGENT_AGENT_USERS"):
        assign("c", table, 2)
    assert assign("b", table, 2)[0] == 1
    assert isinstance(PoolExhausted("x"), ValueError)  # session/start answers invalid params


def test_clean_table_keeps_order_and_drops_repeats() -> None:
    assert clean_table({"a": 1, "b": 1, "c": 0, "d": 9}, 3) == {"a": 1, "c": 0}


@pytest.mark.parametrize(
    ("euid", "as_root", "mode", "warns", "notes"),
    [
        (0, False, RunAs.POOL, False, False),
        (0, True, RunAs.DAEMON, True, False),
        (1000, False, RunAs.DAEMON, False, True),
        (1000, True, RunAs.DAEMON, False, True),  # as root only means something to root
    ],
)
def test_decide_run_as(euid: int, as_root: bool, mode: RunAs, warns: bool, notes: bool) -> None:
    decision = decide_run_as(euid, as_root)
    assert decision.mode is mode
    assert (decision.warning is not None) == warns
    assert (decision.note is not None) == notes
