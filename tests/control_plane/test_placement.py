"""Placement as a pure function, with tables: candidates in, decision and explanation out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from control_plane.demand.placement import (
    Candidate,
    Demand,
    PlacementError,
    Resources,
    Tenant,
    new_node_option,
    node_capacity,
    place,
    user_copy,
)

NOW = 10_000.0
NAN, INF = float("nan"), float("inf")
STALE = 120.0
GB = 1024


def res(cpus: float, mem_gb: float, disk_gb: float) -> Resources:
    return Resources(round(cpus * 1000), round(mem_gb * GB), round(disk_gb * GB))


def demand(
    cpus: float = 2, mem_gb: float = 4, disk_gb: float = 40, *, excl: bool = False, co: int = 4
) -> Demand:
    return Demand(res(cpus, mem_gb, disk_gb), excl, co)


def tenant(ws: str, cpus: float = 1, mem_gb: float = 2, **kw: Any) -> Tenant:
    return Tenant(ws, demand(cpus, mem_gb, 10, **kw))


def node(
    node_id: str,
    cap: tuple[float, float, float] | None = (4, 8, 80),
    *,
    age: float | None = 5,
    tenants: tuple[Tenant, ...] = (),
    requested: bool = False,
    problem: str | None = None,
) -> Candidate:
    return Candidate(
        node_id,
        None if cap is None else res(*cap),
        problem,
        None if age is None else NOW - age,
        requested,
        tenants,
    )


@dataclass(frozen=True)
class Case:
    name: str
    candidates: list[Candidate]
    chosen: str  # a node id, or "new"
    demand: Demand = field(default_factory=demand)
    # node id -> a phrase one of its reasons holds
    reasons: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("no nodes at all: ask for one", [], "new"),
    Case("one node with room", [node("n1")], "n1", reasons={"n1": "the only one of 1"}),
    Case(
        "a stale node is passed over",
        [node("n1", age=STALE + 1)],
        "new",
        reasons={"n1": "stale: last heard from 121 s ago (limit 120 s)"},
    ),
    Case(
        "a node never heard from is passed over",
        [node("n1", age=None)],
        "new",
        reasons={"n1": "never heard from"},
    ),
    Case(
        "a node without a capacity report is passed over",
        [node("n1", None, problem="capacity unknown: no mem_total_bytes reported")],
        "new",
        reasons={"n1": "no mem_total_bytes"},
    ),
    Case(
        "too little cpu",
        [node("n1", (1, 8, 80))],
        "new",
        reasons={"n1": "cpu: 1000m free < 2000m asked"},
    ),
    Case(
        "tenants' reservations count against capacity",
        [node("n1", tenants=(tenant("w1", 1, 5),))],
        "new",
        reasons={"n1": "memory: 3072 MB free < 4096 MB asked"},
    ),
    Case(
        "disk counts too",
        [node("n1", (4, 8, 39))],
        "new",
        reasons={"n1": "disk: 39936 MB free < 40960 MB asked"},
    ),
    Case("an exact fit fits", [node("n1", (2, 4, 40))], "n1"),
    Case(
        "the task wants a node to itself: a node with a tenant will not do",
        [node("n1", (8, 16, 160), tenants=(tenant("w1"),)), node("n2", (8, 16, 160))],
        "n2",
        demand=demand(excl=True),
        reasons={"n1": "wants a node to itself (exclusiveNode); it has 1 tenants"},
    ),
    Case(
        "a tenant that has the node to itself keeps it",
        [node("n1", (8, 16, 160), tenants=(tenant("w1", excl=True),))],
        "new",
        reasons={"n1": "tenant w1 has the node to itself"},
    ),
    Case(
        "the task's own maxCoTenants",
        [node("n1", (8, 16, 160), tenants=(tenant("w1"), tenant("w2")))],
        "new",
        demand=demand(co=1),
        reasons={"n1": "the task allows at most 1 co-tenants; the node has 2"},
    ),
    Case(
        "the task's maxCoTenants allows as many as there are",
        [node("n1", (8, 16, 160), tenants=(tenant("w1"),))],
        "n1",
        demand=demand(co=1),
    ),
    Case(
        "a tenant's maxCoTenants",
        [node("n1", (8, 16, 160), tenants=(tenant("w1", co=1), tenant("w2")))],
        "new",
        reasons={"n1": "tenant w1 allows at most 1 co-tenants; placing here would make 2"},
    ),
    Case(
        "the tightest fit wins",
        [node("big", (8, 32, 160)), node("snug", (4, 6, 80)), node("mid", (4, 16, 80))],
        "snug",
        reasons={"big": "fits, but snug is a tighter fit", "snug": "tightest of the 3"},
    ),
    Case(
        "a reported node is preferred to a requested one, however tight",
        [node("asked", (2, 4, 40), age=None, requested=True), node("up", (8, 32, 160))],
        "up",
        reasons={"asked": "ready node up is preferred to a requested one"},
    ),
    Case(
        "a requested node with room is packed before asking for another",
        [node("asked", (4, 8, 80), age=None, requested=True, tenants=(tenant("w1"),))],
        "asked",
    ),
    Case(
        "equal fits go to the first node id",
        [node("n2"), node("n1")],
        "n1",
        reasons={"n2": "n1 is a tighter fit"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_placement(case: Case) -> None:
    got = place(
        case.demand,
        case.candidates,
        now=NOW,
        stale_after_s=STALE,
        new_node=new_node_option("hetzner", "small", "reservation"),
        new_node_id="node-new",
        max_nodes=10,
    )
    ex = got.explanation
    assert ex["version"] == 1
    assert ex["demand"] == case.demand.to_json()
    by_node = {c["nodeId"]: c for c in ex["candidates"]}
    assert sorted(by_node) == sorted(c.node_id for c in case.candidates)
    if case.chosen == "new":
        assert (got.node_id, got.new_node is not None) == ("node-new", True)
        assert ex["decision"] == {
            "kind": "new_node",
            "nodeId": "node-new",
            "provider": "hetzner",
            "size": "small",
            "sizeSource": "reservation",
            "capacity": {"cpuMillis": 2000, "memoryMb": 4096, "diskMb": 40960},
        }
        assert not any(c["taken"] for c in ex["candidates"])
    else:
        assert (got.node_id, got.new_node) == (case.chosen, None)
        assert ex["decision"] == {"kind": "existing_node", "nodeId": case.chosen}
        assert [c["nodeId"] for c in ex["candidates"] if c["taken"]] == [case.chosen]
        assert ex["summary"].startswith(f"placed on {case.chosen}: fits")
    for node_id, phrase in case.reasons.items():
        reasons = by_node[node_id]["reasons"]
        assert any(phrase in r for r in reasons), (node_id, reasons)
    for entry in ex["candidates"]:
        assert entry["reasons"], entry  # every candidate says why


def test_the_explanation_shows_free_room_and_tenants() -> None:
    got = place(
        demand(1, 1, 10),
        [node("n1", tenants=(tenant("w1", 1, 2), tenant("w2", 1, 2)))],
        now=NOW,
        stale_after_s=STALE,
        new_node=new_node_option("hetzner", "small", "reservation"),
        new_node_id="x",
        max_nodes=10,
    )
    (entry,) = got.explanation["candidates"]
    assert entry["free"] == {"cpuMillis": 2000, "memoryMb": 4096, "diskMb": 61440}
    assert entry["tenants"] == ["w1", "w2"]
    assert entry["status"] == "reported"
    assert "left after placing: cpu 1000m, memory 3072 MB, disk 51200 MB" in entry["reasons"]


def _placed(candidates: list[Candidate], d: Demand, max_nodes: int = 10) -> dict[str, Any]:
    try:
        got = place(
            d,
            candidates,
            now=NOW,
            stale_after_s=STALE,
            new_node=new_node_option("hetzner", "small", "reservation"),
            new_node_id="node-new",
            max_nodes=max_nodes,
        )
    except PlacementError as exc:
        return exc.explanation
    return got.explanation


def _mine(ws: str, owner: str, **kw: Any) -> Tenant:
    return Tenant(ws, demand(1, 1, 10, **kw), owner)


FLEET = [
    node("n1", (8, 16, 160), tenants=(_mine("w-a1", "alice"), _mine("w-b1", "bob"))),
    node("n2", (8, 16, 160), tenants=(_mine("w-b2", "bob", excl=True),)),
    node("n3", (0.5, 1, 10)),  # too small for any of these
]
# what is placed, the fleet, alice's copy: the candidates shown, the summary
USER_COPIES: list[tuple[str, Demand, list[Candidate], int, list[dict[str, Any]], str]] = [
    (
        "placed beside her own and bob's workspaces: only hers is named",
        demand(1, 1, 10),
        FLEET,
        10,
        [{"nodeId": "n1", "status": "reported", "taken": True, "tenants": ["w-a1"]}],
        "placed on n1",
    ),
    (
        "a new node: nothing of the nodes passed over",
        demand(1, 1, 10, excl=True),
        FLEET,
        10,
        [],
        "asked for a new hetzner small node node-new",
    ),
    (
        "unplaceable: not the node limit nor the count of nodes",
        demand(1, 1, 10, excl=True),
        FLEET,
        3,
        [],
        "cannot place the task: no node may take it, and no new node may be asked for now",
    ),
]


@pytest.mark.parametrize("case", USER_COPIES, ids=[c[0] for c in USER_COPIES])
def test_the_users_copy_names_only_what_is_theirs(
    case: tuple[str, Demand, list[Candidate], int, list[dict[str, Any]], str],
) -> None:
    _, d, fleet, max_nodes, shown, summary = case
    full = _placed(fleet, d, max_nodes)
    mine = user_copy(full, "alice")
    assert mine["candidates"] == shown
    assert mine["summary"] == summary
    assert mine["decision"] == full["decision"]
    assert mine["demand"] == full["demand"]
    text = repr(mine)
    for leak in ("w-b1", "w-b2", "bob", "free", "n2", "n3", "reasons", "node limit"):
        assert leak not in text, leak
    # The full copy (the admins') has all of it.
    assert {"w-b1", "w-b2"} <= {w for c in full["candidates"] for w in c["tenants"]}
    assert all("free" in c and c["reasons"] for c in full["candidates"])


def test_a_copy_of_an_explanation_stored_before_owners_shows_no_tenant() -> None:
    full = _placed(FLEET, demand(1, 1, 10))
    for c in full["candidates"]:
        del c["tenantOwners"]
    assert user_copy(full, "alice")["candidates"][0]["tenants"] == []


def test_no_room_and_the_node_limit_reached_is_unplaceable() -> None:
    with pytest.raises(PlacementError) as info:
        place(
            demand(),
            [node("n1", (1, 8, 80)), node("n2", age=STALE * 2)],
            now=NOW,
            stale_after_s=STALE,
            new_node=new_node_option("hetzner", "small", "reservation"),
            new_node_id="x",
            max_nodes=2,
        )
    err = info.value
    assert "none of 2 candidate nodes may take it" in str(err)
    assert "node limit (2) is reached" in str(err)
    assert err.explanation["decision"] == {"kind": "unplaceable"}
    assert err.explanation["summary"] == str(err)
    assert [c["taken"] for c in err.explanation["candidates"]] == [False, False]


def test_a_new_node_that_would_not_hold_the_task_is_a_bug_in_the_caller() -> None:
    with pytest.raises(ValueError, match="does not hold"):
        place(
            demand(8, 4, 40),
            [],
            now=NOW,
            stale_after_s=STALE,
            new_node=new_node_option("hetzner", "small", "task"),
            new_node_id="x",
            max_nodes=5,
        )


@pytest.mark.parametrize(
    ("capacity", "usage", "expected", "problem"),
    [
        (
            {"cpus": 2, "mem_total_bytes": 4 * 2**30, "disk_total_bytes": 40 * 2**30},
            None,
            Resources(2000, 4096, 40960),
            None,
        ),
        # A heartbeat's totals are newer than the ready report's.
        (
            {"cpus": 2, "mem_total_bytes": 4 * 2**30, "disk_total_bytes": 40 * 2**30},
            {"cpus": 4, "mem_total_bytes": 8 * 2**30, "load_1m": 0.5},
            Resources(4000, 8192, 40960),
            None,
        ),
        ({"cpus": 2, "disk_total_bytes": 1}, {}, None, "no mem_total_bytes reported"),
        (None, None, None, "no cpus reported"),
        ({"cpus": True, "mem_total_bytes": 1, "disk_total_bytes": 1}, None, None, "no cpus"),
        ({"cpus": 2, "mem_total_bytes": -1, "disk_total_bytes": 1}, None, None, "mem_total"),
        ({"cpus": "2", "mem_total_bytes": 1, "disk_total_bytes": 1}, None, None, "no cpus"),
        # Stored before the callback API refused them: never a 500 for everyone's tasks.
        ({"cpus": NAN, "mem_total_bytes": 1, "disk_total_bytes": 1}, None, None, "cpus is not"),
        (
            {"cpus": 2, "mem_total_bytes": 1, "disk_total_bytes": 1},
            {"mem_total_bytes": INF},
            None,
            "mem_total_bytes is not",
        ),
        ({"cpus": 2, "mem_total_bytes": 1, "disk_total_bytes": -INF}, None, None, "disk_total"),
        ({"cpus": 2, "mem_total_bytes": 1e300, "disk_total_bytes": 1}, None, None, "mem_total"),
        ({"cpus": 10**30, "mem_total_bytes": 1, "disk_total_bytes": 1}, None, None, "cpus is"),
    ],
)
def test_node_capacity_from_ready_and_heartbeats(
    capacity: dict[str, Any] | None,
    usage: dict[str, Any] | None,
    expected: Resources | None,
    problem: str | None,
) -> None:
    got, why = node_capacity(capacity, usage)
    assert got == expected
    if problem is None:
        assert why is None
    else:
        assert why is not None and problem in why
