"""Placement: which node a task's workspace goes to, and why. Pure: facts in, decision out.

The candidates are the nodes known (capacity from `ready`, totals updated by heartbeats)
and the nodes earlier placements asked for that have not reported yet, each with its
tenants (the active workspaces placed there). A node may take the task when it is fresh
(heard from recently; a requested node counts as fresh), it has room for the task's
demand next to its tenants' reservations, no tenant holds it exclusively, the task's own
`exclusiveNode` finds it empty, and nobody's `maxCoTenants` is exceeded. Of the nodes
that may, a reported node wins over a requested one, then the tightest fit (least memory,
then CPU, left over). When none may, placement asks for a new node of the smallest size
of the provider that holds the task (or the size the task named), unless the node limit
is reached. The explanation (JSON) lists every candidate with why it was taken or passed
over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from control_plane.demand.capacity import PROVIDER_CAPACITY, SizeCapacity
from control_plane.demand.reservations import ResolvedResourceReservation

EXPLANATION_VERSION = 1
MB = 1024 * 1024
# The largest totals a node may report (the callback API refuses more); a stored value
# past them (or not finite: rows from before that check) leaves the capacity unknown.
MAX_NODE_CPUS = 65_536
MAX_NODE_BYTES = 2**53  # 8 PiB: exact as a double, and past any VM's memory or disk
_CAPACITY_BOUNDS = {
    "cpus": MAX_NODE_CPUS,
    "mem_total_bytes": MAX_NODE_BYTES,
    "disk_total_bytes": MAX_NODE_BYTES,
}


@dataclass(frozen=True, order=True)
class Resources:
    cpu_millis: int
    memory_mb: int
    disk_mb: int

    def minus(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis - other.cpu_millis,
            self.memory_mb - other.memory_mb,
            self.disk_mb - other.disk_mb,
        )

    def plus(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis + other.cpu_millis,
            self.memory_mb + other.memory_mb,
            self.disk_mb + other.disk_mb,
        )

    def lacks(self, wanted: Resources) -> list[str]:
        """What `self` (free room) lacks for `wanted`; empty when it fits."""
        out: list[str] = []
        if self.cpu_millis < wanted.cpu_millis:
            out.append(f"cpu: {self.cpu_millis}m free < {wanted.cpu_millis}m asked")
        if self.memory_mb < wanted.memory_mb:
            out.append(f"memory: {self.memory_mb} MB free < {wanted.memory_mb} MB asked")
        if self.disk_mb < wanted.disk_mb:
            out.append(f"disk: {self.disk_mb} MB free < {wanted.disk_mb} MB asked")
        return out

    def to_json(self) -> dict[str, int]:
        return {"cpuMillis": self.cpu_millis, "memoryMb": self.memory_mb, "diskMb": self.disk_mb}

    @classmethod
    def of_size(cls, size: SizeCapacity) -> Resources:
        return cls(size.cpu_millis, size.memory_mb, size.disk_mb)


@dataclass(frozen=True)
class Demand:
    resources: Resources
    exclusive_node: bool
    max_co_tenants: int

    @classmethod
    def of(cls, res: ResolvedResourceReservation) -> Demand:
        return cls(
            Resources(res.cpu_millis, res.memory_mb, res.disk_mb),
            res.exclusive_node,
            res.max_co_tenants,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.resources.to_json(),
            "exclusiveNode": self.exclusive_node,
            "maxCoTenants": self.max_co_tenants,
        }


@dataclass(frozen=True)
class Tenant:
    workspace_id: str
    demand: Demand
    owner: str = ""  # whose workspace: the user's copy of an explanation shows only theirs


@dataclass(frozen=True)
class Candidate:
    node_id: str
    capacity: Resources | None  # None: not known (see `capacity_problem`)
    capacity_problem: str | None = None
    last_seen: float | None = None  # the latest ready or heartbeat
    requested: bool = False  # asked for by an earlier placement, has not reported yet
    tenants: tuple[Tenant, ...] = field(default=())


def node_capacity(
    capacity: Mapping[str, Any] | None, usage: Mapping[str, Any] | None
) -> tuple[Resources | None, str | None]:
    """A node's totals from its `ready` capacity, updated by its latest heartbeat's usage
    (both as the daemon sends them: `cpus`, `mem_total_bytes`, `disk_total_bytes`)."""
    merged: dict[str, Any] = {**(capacity or {})}
    for key in ("cpus", "mem_total_bytes", "disk_total_bytes"):
        if usage and key in usage:
            merged[key] = usage[key]
    values: list[int] = []
    for key, bound in _CAPACITY_BOUNDS.items():
        value = merged.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"capacity unknown: no {key} reported"
        # Never trust a stored number: NaN and infinities would make int() raise.
        if not (math.isfinite(value) and 0 <= value <= bound):
            return None, f"capacity unknown: {key} is not a number from 0 to {bound}"
        values.append(int(value))
    cpus, mem, disk = values
    return Resources(cpus * 1000, mem // MB, disk // MB), None


@dataclass(frozen=True)
class NewNode:
    provider: str
    size: str
    size_source: str
    capacity: Resources


@dataclass(frozen=True)
class Placement:
    node_id: str
    new_node: NewNode | None  # set when placement asks for this (new) node
    explanation: dict[str, Any]


class PlacementError(ValueError):
    """The task fits nowhere and no new node may be asked for; `explanation` says why."""

    def __init__(self, summary: str, explanation: dict[str, Any]) -> None:
        super().__init__(summary)
        self.explanation = explanation


@dataclass(frozen=True)
class _Verdict:
    candidate: Candidate
    reasons: list[str]
    free: Resources | None
    fits: bool


def _judge(demand: Demand, c: Candidate, now: float, stale_after_s: float) -> _Verdict:
    reasons: list[str] = []
    if c.capacity is None:
        return _Verdict(c, [c.capacity_problem or "capacity unknown"], None, False)
    if not c.requested:
        age = None if c.last_seen is None else now - c.last_seen
        if age is None or age > stale_after_s:
            heard = "never heard from" if age is None else f"last heard from {age:.0f} s ago"
            reasons.append(f"stale: {heard} (limit {stale_after_s:.0f} s)")
    used = Resources(0, 0, 0)
    for t in c.tenants:
        used = used.plus(t.demand.resources)
    free = c.capacity.minus(used)
    others = len(c.tenants)
    if demand.exclusive_node and others:
        reasons.append(f"the task wants a node to itself (exclusiveNode); it has {others} tenants")
    for t in c.tenants:
        if t.demand.exclusive_node:
            reasons.append(f"tenant {t.workspace_id} has the node to itself (exclusiveNode)")
    if others > demand.max_co_tenants:
        reasons.append(
            f"the task allows at most {demand.max_co_tenants} co-tenants; the node has {others}"
        )
    for t in c.tenants:
        # With the task placed, every tenant would have `others` co-tenants.
        if others > t.demand.max_co_tenants:
            reasons.append(
                f"tenant {t.workspace_id} allows at most {t.demand.max_co_tenants} co-tenants;"
                f" placing here would make {others}"
            )
    reasons += free.lacks(demand.resources)
    return _Verdict(c, reasons, free, not reasons)


def _rank(v: _Verdict, demand: Demand) -> tuple[bool, int, int, str]:
    assert v.free is not None
    left = v.free.minus(demand.resources)
    return (v.candidate.requested, left.memory_mb, left.cpu_millis, v.candidate.node_id)


def new_node_option(provider: str, size: str, size_source: str) -> NewNode:
    capacity = Resources.of_size(PROVIDER_CAPACITY[provider][size])
    return NewNode(provider, size, size_source, capacity)


def place(
    demand: Demand,
    candidates: Sequence[Candidate],
    *,
    now: float,
    stale_after_s: float,
    new_node: NewNode,
    new_node_id: str,
    max_nodes: int,
) -> Placement:
    """Pick a node for `demand` (see the module's doc); raises PlacementError if none.

    `new_node` is what to ask for when no candidate may take the task (the shell picked
    the size from the reservation, or the task named it); `new_node_id` is its id."""
    verdicts = [
        _judge(demand, c, now, stale_after_s) for c in sorted(candidates, key=lambda c: c.node_id)
    ]
    fitting = sorted((v for v in verdicts if v.fits), key=lambda v: _rank(v, demand))
    chosen = fitting[0] if fitting else None
    entries: list[dict[str, Any]] = []
    taken_because = ""
    for v in verdicts:
        reasons = v.reasons
        if v.fits and chosen is not None and v is not chosen:
            why = (
                f"ready node {chosen.candidate.node_id} is preferred to a requested one"
                if v.candidate.requested and not chosen.candidate.requested
                else f"{chosen.candidate.node_id} is a tighter fit"
            )
            reasons = [f"fits, but {why}"]
        elif v is chosen:
            left = v.free.minus(demand.resources) if v.free is not None else None
            reasons = [
                f"fits (the only one of {len(verdicts)} candidates that does)"
                if len(fitting) == 1
                else f"fits, the tightest of the {len(fitting)} candidates that do"
            ]
            taken_because = reasons[0]
            if left is not None:
                reasons.append(
                    f"left after placing: cpu {left.cpu_millis}m, memory {left.memory_mb} MB,"
                    f" disk {left.disk_mb} MB"
                )
        entries.append(
            {
                "nodeId": v.candidate.node_id,
                "status": "requested" if v.candidate.requested else "reported",
                "taken": v is chosen,
                "reasons": reasons,
                "free": None if v.free is None else v.free.to_json(),
                "tenants": [t.workspace_id for t in v.candidate.tenants],
                "tenantOwners": [t.owner for t in v.candidate.tenants],
            }
        )
    explanation: dict[str, Any] = {
        "version": EXPLANATION_VERSION,
        "demand": demand.to_json(),
        "candidates": entries,
    }
    if chosen is not None:
        node_id = chosen.candidate.node_id
        explanation["decision"] = {"kind": "existing_node", "nodeId": node_id}
        explanation["summary"] = f"placed on {node_id}: {taken_because}"
        return Placement(node_id, None, explanation)

    none_fit = (
        "no candidate node"
        if not verdicts
        else f"none of {len(verdicts)} candidate nodes may take it"
    )
    if len(verdicts) >= max_nodes:
        explanation["decision"] = {"kind": "unplaceable"}
        summary = (
            f"cannot place the task: {none_fit}, and the node limit ({max_nodes}) is reached,"
            " so no new node may be asked for"
        )
        explanation["summary"] = summary
        raise PlacementError(summary, explanation)
    if lacks := new_node.capacity.lacks(
        demand.resources
    ):  # the shell checks sizes first; this guards the contract
        raise ValueError(f"new node {new_node.size} does not hold the demand: {lacks}")
    explanation["decision"] = {
        "kind": "new_node",
        "nodeId": new_node_id,
        "provider": new_node.provider,
        "size": new_node.size,
        "sizeSource": new_node.size_source,
        "capacity": new_node.capacity.to_json(),
    }
    explanation["summary"] = (
        f"asked for a new {new_node.provider} {new_node.size} node {new_node_id}: {none_fit}"
    )
    return Placement(new_node_id, new_node, explanation)


def user_summary(decision: Mapping[str, Any]) -> str:
    """The summary a user is shown: the decision alone, nothing of the fleet."""
    kind = decision.get("kind")
    if kind == "existing_node":
        return f"placed on {decision.get('nodeId')}"
    if kind == "new_node":
        return (
            f"asked for a new {decision.get('provider')} {decision.get('size')} node"
            f" {decision.get('nodeId')}"
        )
    return "cannot place the task: no node may take it, and no new node may be asked for now"


def user_copy(explanation: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """The explanation as `owner` (the task's user) may see it: the demand, the decision,
    and the node taken with only `owner`'s workspaces on it. Nothing of other nodes, other
    users' workspaces, anyone's free room or the fleet's size: that is the full copy, the
    admins'. Works on explanations stored before owners were recorded (then no tenant is
    shown)."""
    shown: list[dict[str, Any]] = []
    for c in explanation.get("candidates", []):
        if not c.get("taken"):
            continue
        owners = c.get("tenantOwners") or []
        mine = [w for w, o in zip(c.get("tenants", []), owners, strict=False) if o == owner]
        entry = {"nodeId": c.get("nodeId"), "status": c.get("status"), "taken": True}
        shown.append({**entry, "tenants": mine})
    decision = dict(explanation.get("decision") or {})
    return {
        "version": explanation.get("version", EXPLANATION_VERSION),
        "copy": "user",
        "demand": explanation.get("demand"),
        "candidates": shown,
        "decision": decision,
        "summary": user_summary(decision),
    }
