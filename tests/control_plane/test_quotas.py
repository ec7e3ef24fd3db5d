"""The quota decision, with a table: what a submission would add against what its owner
(and its project) holds."""

from __future__ import annotations

import pytest

from control_plane.demand.quotas import Ask, Holding, Limits, refusal

LIMITS = Limits(user_nodes=2, user_tasks=3, user_sessions=4, project_nodes=3, project_tasks=5)
N2 = frozenset({"n1", "n2"})

# name, what the user holds, the ask, what the project holds (None: no project), refusal
CASES: list[tuple[str, Holding, Ask, Holding | None, str | None]] = [
    ("nothing held: a task on a new node", Holding(), Ask("new"), None, None),
    ("below every quota", Holding(frozenset({"n1"}), 1, 1), Ask("new"), None, None),
    ("at the node quota, a new node", Holding(N2, 2, 2), Ask("new"), None, "user_nodes"),
    ("at the node quota, a node already held", Holding(N2, 2, 2), Ask("n1"), None, None),
    ("at the task quota", Holding(N2, 3, 3), Ask("n1"), None, "user_tasks"),
    ("at the session quota: a task", Holding(N2, 2, 4), Ask("n1"), None, "user_sessions"),
    ("at the session quota: a session", Holding(N2, 3, 4), Ask(None), None, "user_sessions"),
    ("at the task quota, a session alone is no task", Holding(N2, 3, 3), Ask(None), None, None),
    ("at the node quota, a session alone is no node", Holding(N2, 2, 3), Ask(None), None, None),
    (
        "project at its node quota",
        Holding(),
        Ask("new"),
        Holding(frozenset({"a", "b", "c"}), 3),
        "project_nodes",
    ),
    (
        "project at its node quota, a node it holds",
        Holding(),
        Ask("a"),
        Holding(frozenset({"a", "b", "c"}), 3),
        None,
    ),
    (
        "project at its task quota",
        Holding(),
        Ask("a"),
        Holding(frozenset({"a"}), 5),
        "project_tasks",
    ),
    (
        "the user's quota is named before the project's",
        Holding(N2, 0, 0),
        Ask("new"),
        Holding(frozenset({"a", "b", "c"}), 5),
        "user_nodes",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_quota_decisions(case: tuple[str, Holding, Ask, Holding | None, str | None]) -> None:
    _, user, ask, project, refused = case
    got = refusal(LIMITS, user, ask, project)
    assert (got and got.quota) == refused
    if got is not None:
        assert got.used >= got.limit
        setting = str(got.to_json()["setting"])
        assert setting.startswith("CONTROL_PLANE_") and setting in got.message


def test_a_zero_quota_refuses_the_first() -> None:
    zero = Limits(0, 0, 0, 0, 0)
    got = refusal(zero, Holding(), Ask("n1"))
    assert got is not None and got.quota == "user_nodes"
    assert got.message == (
        "quota reached: the user holds 0 nodes (limit 0, CONTROL_PLANE_USER_MAX_NODES)"
    )
    assert refusal(zero, Holding(), Ask(None)) is not None  # a session: user_sessions
