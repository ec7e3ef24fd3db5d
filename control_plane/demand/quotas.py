"""Quotas: how much of the fleet one user (and one project) may hold. Pure.

A submission is judged against what its owner already holds (and, when it names a
project, what every task of that project holds): the nodes their active workspaces run on
together with the nodes asked for on their behalf that have not reported yet, the tasks in
flight (active workspaces) and the sessions not ended. The shell counts these inside the
submission's transaction, under the placement lock, so that two replicas submitting at
once take turns and never both see the last free unit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The most one user, or one project, may hold (control-plane settings)."""

    user_nodes: int
    user_tasks: int
    user_sessions: int
    project_nodes: int
    project_tasks: int


# Each quota's name in a refusal, and the setting that sets it.
SETTINGS = {
    "user_nodes": "CONTROL_PLANE_USER_MAX_NODES",
    "user_tasks": "CONTROL_PLANE_USER_MAX_TASKS",
    "user_sessions": "CONTROL_PLANE_USER_MAX_SESSIONS",
    "project_nodes": "CONTROL_PLANE_PROJECT_MAX_NODES",
    "project_tasks": "CONTROL_PLANE_PROJECT_MAX_TASKS",
}


@dataclass(frozen=True)
class Holding:
    """What a user (or a project) holds now."""

    nodes: frozenset[str] = frozenset()  # active workspaces' nodes, and pending requests
    tasks: int = 0  # active workspaces
    sessions: int = 0  # sessions not ended (users only)


@dataclass(frozen=True)
class Ask:
    """What the submission would add: a workspace on `node_id` (a task), sessions."""

    node_id: str | None = None  # None: no task (an explicit session)
    sessions: int = 1


@dataclass(frozen=True)
class QuotaRefusal:
    quota: str
    limit: int
    used: int
    message: str

    def to_json(self) -> dict[str, str | int]:
        return {"quota": self.quota, "setting": SETTINGS[self.quota], "limit": self.limit}


_Check = tuple[str, str, str, int, int, int]  # quota, who, what, used, added, limit


def _over(check: _Check) -> QuotaRefusal | None:
    quota, who, what, used, added, limit = check
    if added == 0 or used + added <= limit:
        return None
    return QuotaRefusal(
        quota,
        limit,
        used,
        f"quota reached: {who} holds {used} {what} (limit {limit}, {SETTINGS[quota]})",
    )


def refusal(
    limits: Limits, user: Holding, ask: Ask, project: Holding | None = None
) -> QuotaRefusal | None:
    """The first quota `ask` would exceed, or None. A node already held costs nothing;
    quotas are checked user first, then project, nodes before tasks before sessions."""
    tasks = 0 if ask.node_id is None else 1

    def new_nodes(h: Holding) -> int:
        return 0 if ask.node_id is None or ask.node_id in h.nodes else 1

    checks: list[_Check] = [
        ("user_nodes", "the user", "nodes", len(user.nodes), new_nodes(user), limits.user_nodes),
        ("user_tasks", "the user", "tasks in flight", user.tasks, tasks, limits.user_tasks),
        (
            "user_sessions",
            "the user",
            "sessions",
            user.sessions,
            ask.sessions,
            limits.user_sessions,
        ),
    ]
    if project is not None:
        checks += [
            ("project_nodes", "the project", "nodes", len(project.nodes), new_nodes(project),
             limits.project_nodes),
            ("project_tasks", "the project", "tasks in flight", project.tasks, tasks,
             limits.project_tasks),
        ]  # fmt: skip
    for check in checks:
        if found := _over(check):
            return found
    return None
