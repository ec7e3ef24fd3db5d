"""Task submission: resolve the reservation from the stored layers, place the task into a
workspace on a node, make its agent session, and store the audit, in one transaction.

The layers: the task's own requirements (from the request), then the stored defaults of
the trigger, agent profile and project the task names (`id`: the owner's own; `alice/id`:
one alice's that an admin shared with the owner; any other answers as if it did not
exist), of the user it runs for (the token's subject, never the request body), and of
the platform. Task ids are unique per owner. The owner's (and the project's) quotas are
checked in the same transaction, under the placement lock. `plan_size` is pure.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import Connection, Engine, RowMapping, insert, select

from control_plane.demand import placement, quotas
from control_plane.demand.capacity import (
    PROVIDER_CAPACITY,
    SIZE_ORDER,
    UnknownProviderError,
    pick_size,
    shortfalls,
)
from control_plane.demand.reservations import (
    PLATFORM_LAYER_ID,
    LayerKind,
    ResolvedResourceReservation,
)
from control_plane.demand.resolver import Layer, parse_requirements, resolve
from control_plane.dispatch import runs, sessions, task_settings, workspaces
from control_plane.github import access, rules
from control_plane.storage import layers
from control_plane.storage.db import agent_sessions, tasks
from control_plane.storage.db import workspaces as ws_table
from control_plane.storage.machines import take_placement_lock

_camel = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)
_ID = r"^[A-Za-z0-9._:@-]{1,128}$"
_REF = r"^(?:[A-Za-z0-9._:@-]{1,128}/)?[A-Za-z0-9._:@-]{1,128}$"  # id, or owner/id

VM_SIZE_FROM_TASK = "task"  # the task asked for a size explicitly
VM_SIZE_FROM_RESERVATION = "reservation"  # smallest size that fits the resolved reservation


class TaskSubmission(BaseModel):
    """A task: its agent, its own requirements, and the ids of the layers it runs under."""

    model_config = ConfigDict(**_camel, extra="forbid")

    task_id: str | None = Field(default=None, pattern=_ID)
    agent: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    provider: str | None = None
    vm_size: str | None = None
    requirements: dict[str, Any] | None = None
    trigger_id: str | None = Field(default=None, pattern=_REF)
    agent_profile_id: str | None = Field(default=None, pattern=_REF)
    project_id: str | None = Field(default=None, pattern=_REF)
    # The work (0014): text or ACP content blocks (checked by runs.prompt_blocks), how the
    # agent's permission requests are answered, and whether the session waits for more.
    prompt: str | list[Any]
    permission_policy: Literal["ask", "allow", "reject"] | None = None
    follow_ups: bool = False
    # The repository the task works in (issue 23): `owner/name` (checked against the
    # user's GitHub links by the API), the branch it starts from (None: the remote's
    # default), and whether its pushed branch becomes a pull request.
    repository: str | None = Field(default=None, max_length=141)
    base_branch: str | None = Field(default=None, min_length=1, max_length=200)
    pull_request: bool = False
    # The task's own agent settings (issue 25): the first layer of the agent's settings.
    agent_settings: dict[str, Any] | None = None


class TaskRecord(workspaces.DemandAudit):
    """A task as stored and as the API shows it (owner, agent and workspace are null on
    rows from before migration 0006)."""

    task_id: str  # the owner's own id (`taskId`), unique per owner
    key: str = Field(exclude=True)  # tasks.task_id: the dispatcher's key, unique overall
    owner: str | None
    agent: str | None
    workspace_id: str | None
    node_id: str | None
    session_id: str | None
    status: str | None = None
    repository: str | None = None
    branch: str | None = None  # the task branch the node pushes
    base_branch: str | None = None
    pull_request: bool = False
    # Each resolved field's value and provenance (task_settings.py; MCP env and header
    # names only). Null for tasks from before 0023.
    agent_settings: dict[str, Any] | None = None


@dataclass(frozen=True)
class RepositoryAsk:
    """A task's repository, its grant checked (control_plane.github.access) before
    submission: what the workspace's repository row records."""

    grant: access.RepositoryGrant
    base_branch: str | None
    pull_request: bool


class TaskError(ValueError):
    """A submission that cannot be planned or placed (HTTP 422); `detail` goes in the body."""

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.detail = detail


class TaskExistsError(ValueError):
    pass


class QuotaError(ValueError):
    """A quota the submission would exceed (HTTP 429): `refusal` names it."""

    def __init__(self, refusal: quotas.QuotaRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def plan_size(
    provider: str, vm_size: str | None, res: ResolvedResourceReservation
) -> tuple[str, str]:
    """The VM size a new node for this task would have, and where it came from. Pure."""
    if provider not in PROVIDER_CAPACITY:
        raise TaskError(str(UnknownProviderError(provider)))
    if vm_size is None:
        try:
            return pick_size(provider, res), VM_SIZE_FROM_RESERVATION
        except ValueError as exc:
            raise TaskError(str(exc)) from exc
    if vm_size not in SIZE_ORDER:
        raise TaskError(f"vmSize must be one of {list(SIZE_ORDER)}, got {vm_size!r}")
    if lacks := shortfalls(PROVIDER_CAPACITY[provider][vm_size], res):
        raise TaskError(f"{provider} {vm_size} does not fit: {'; '.join(lacks)}")
    return vm_size, VM_SIZE_FROM_TASK


@dataclass(frozen=True)
class Placing:
    """What placement is given besides the database: settings, clock and fresh ids."""

    default_provider: str
    node_stale_after_s: float
    max_nodes: int
    now: float
    limits: quotas.Limits
    admin: bool = False  # the submitter is an admin (may use anyone's layers)


def _stored_layers(
    conn: Connection, sub: TaskSubmission, owner: str, admin: bool
) -> tuple[list[Layer], Layer, tuple[str, str] | None]:
    """The stored layers the task runs under, the platform's, and its project (whose, id)."""
    named = [
        (LayerKind.TRIGGER, sub.trigger_id),
        (LayerKind.AGENT_PROFILE, sub.agent_profile_id),
        (LayerKind.PROJECT, sub.project_id),
    ]
    out: list[Layer] = []
    project: tuple[str, str] | None = None
    for kind, ref in named:
        if ref is None:
            continue
        layer_owner, _, layer_id = ref.rpartition("/")
        layer_owner = layer_owner or owner
        stored = layers.readable(conn, kind, layer_owner, layer_id, actor=owner, admin=admin)
        if stored is None:  # absent, or not the owner's to use: the same answer
            raise TaskError(f"no stored defaults for {kind.value} {ref!r}", layer=kind.value)
        out.append(stored.layer(ref))
        if kind is LayerKind.PROJECT:
            project = (layer_owner, layer_id)
    user = layers.current(conn, LayerKind.USER, owner, owner)
    if user is not None:
        out.append(user.layer())
    platform = layers.current(conn, LayerKind.PLATFORM, layers.PLATFORM_OWNER, PLATFORM_LAYER_ID)
    if platform is None:
        raise RuntimeError("the platform layer is missing (migration 0005 stores it)")
    return out, platform.layer(), project


def _check_quotas(
    conn: Connection, ctx: Placing, owner: str, node_id: str, project: tuple[str, str] | None
) -> None:
    held = workspaces.user_holding(conn, owner)
    by_project = None if project is None else workspaces.project_holding(conn, *project)
    if refused := quotas.refusal(ctx.limits, held, quotas.Ask(node_id), by_project):
        raise QuotaError(refused)


def submit_task(
    engine: Engine,
    sub: TaskSubmission,
    owner: str,
    ctx: Placing,
    repository: RepositoryAsk | None = None,
) -> TaskRecord:
    """Resolve, place and store a task for `owner` (RequirementsError, TaskError with the
    placement explanation when it fits nowhere, TaskExistsError), with its repository's
    grant and task branch when it has one."""
    task_id = sub.task_id or uuid.uuid4().hex
    branch = None if repository is None else rules.task_branch(task_id)
    if repository is not None and repository.base_branch == branch:
        raise TaskError(f"baseBranch may not be the task's own branch ({branch})")
    key = new_task_key()
    own = Layer(
        LayerKind.TASK,
        task_id,
        parse_requirements(LayerKind.TASK, sub.requirements),
        settings=task_settings.own_settings(sub.agent_settings),
    )
    provider = sub.provider or ctx.default_provider
    workspace_id = f"ws-{uuid.uuid4().hex}"
    with engine.begin() as conn:
        take_placement_lock(conn)
        if task_key(conn, owner, task_id) is not None:
            raise TaskExistsError(f"task {task_id!r} exists")
        if repository is not None and branch is not None:
            full_name = repository.grant.repository
            if access.branch_taken(conn, full_name, branch):
                raise TaskExistsError(
                    f"branch {branch} of {full_name} belongs to another task: choose another taskId"
                )
        stored, platform, project = _stored_layers(conn, sub, owner, ctx.admin)
        resolution = resolve([own, *stored], platform)
        res = resolution.reservation
        settings = task_settings.resolve_for_task([own, *stored, platform], sub.agent)
        task_settings.check_secrets(conn, owner, settings)
        size, size_source = plan_size(provider, sub.vm_size, res)
        try:
            placed = placement.place(
                placement.Demand.of(res),
                workspaces.load_candidates(conn),
                now=ctx.now,
                stale_after_s=ctx.node_stale_after_s,
                new_node=placement.new_node_option(provider, size, size_source),
                new_node_id=f"node-{uuid.uuid4().hex[:16]}",
                max_nodes=ctx.max_nodes,
            )
        except placement.PlacementError as exc:
            raise TaskError(str(exc), placement=exc.explanation) from exc
        _check_quotas(conn, ctx, owner, placed.node_id, project)
        if placed.new_node is not None:
            workspaces.insert_node_request(
                conn, placed.node_id, placed.new_node, workspace_id, ctx.now
            )
        audit: dict[str, Any] = {
            "provider": provider,
            "requested_vm_size": size,
            "vm_size_source": size_source,
            "requirements": sub.requirements,
            "reservation": res.to_json_dict(),
            "provenance": resolution.provenance_json(),
            "placement_explanation": placed.explanation,
        }
        ws = workspaces.WorkspaceRecord(
            workspace_id=workspace_id,
            task_id=task_id,
            owner=owner,
            node_id=placed.node_id,
            state=workspaces.ACTIVE,
            created_at=ctx.now,
            project_owner=None if project is None else project[0],
            project_id=None if project is None else project[1],
            **audit,
        )
        workspaces.insert_workspace(conn, ws)
        if repository is not None:
            access.record_workspace_repository(
                conn,
                workspace_id,
                repository.grant,
                ctx.now,
                branch=branch,
                base_branch=repository.base_branch,
                pull_request=repository.pull_request,
            )
        session = sessions.AgentSession(
            session_id=sessions.new_session_id(),
            node_id=placed.node_id,
            agent=sub.agent,
            owner=owner,
            workspace_id=workspace_id,
            created_by=owner,
            created_at=ctx.now,
        )
        sessions.insert_session(conn, session)
        record = TaskRecord(
            task_id=task_id,
            key=key,
            owner=owner,
            agent=sub.agent,
            workspace_id=workspace_id,
            node_id=placed.node_id,
            session_id=session.session_id,
            repository=None if repository is None else repository.grant.repository,
            branch=branch,
            base_branch=None if repository is None else repository.base_branch,
            pull_request=repository is not None and repository.pull_request,
            agent_settings=settings.shown(),
            **audit,
        )
        _insert_task(conn, record, ctx.now, task_settings.columns(settings))
        runs.begin(
            conn,
            key,
            node_id=placed.node_id,
            blocks=runs.prompt_blocks(sub.prompt),
            policy=sub.permission_policy or "ask",
            follow_ups=sub.follow_ups,
            now=ctx.now,
        )
    return record.model_copy(update={"status": runs.STATUS_AFTER_SUBMISSION})


def _insert_task(
    conn: Connection, record: TaskRecord, now: float, settings: dict[str, Any]
) -> None:
    conn.execute(
        insert(tasks).values(
            task_id=record.key,
            client_task_id=record.task_id,
            owner=record.owner,
            agent=record.agent,
            workspace_id=record.workspace_id,
            created_at=now,
            **record.audit_columns(),
            **settings,
        )
    )


def _task_record(row: RowMapping, node_id: str | None, session_id: str | None) -> TaskRecord:
    return TaskRecord(
        task_id=row["client_task_id"],
        key=row["task_id"],
        owner=row["owner"] or None,  # "": a row from before owners (0006)
        agent=row["agent"],
        workspace_id=row["workspace_id"],
        node_id=node_id,
        session_id=session_id,
        status=row.get("status"),
        agent_settings=json.loads(shown)
        if (shown := row.get("agent_settings_provenance_json"))
        else None,
        **workspaces.DemandAudit.audit_of(row),
    )


def new_task_key() -> str:
    """A task's key in `tasks.task_id` (what the dispatcher and its tables use): made here,
    opaque, unique overall; the owner's `taskId` is `client_task_id`, unique per owner."""
    return f"task-{uuid.uuid4().hex}"


def task_key(conn: Connection, owner: str, task_id: str) -> str | None:
    """The key of `owner`'s task `task_id` ("" owns the rows from before 0006), if any."""
    query = select(tasks.c.task_id).where(tasks.c.owner == owner, tasks.c.client_task_id == task_id)
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else str(found)


def load_task(engine: Engine, owner: str, task_id: str) -> TaskRecord | None:
    """`owner`'s task `task_id` (ids are unique per owner; "" for rows from before 0006)."""
    with engine.connect() as conn:
        query = select(tasks).where(tasks.c.owner == owner, tasks.c.client_task_id == task_id)
        row = conn.execute(query).mappings().first()
        if row is None:
            return None
        node_id = session_id = None
        if row["workspace_id"] is not None:
            node_id = conn.execute(
                select(ws_table.c.node_id).where(ws_table.c.workspace_id == row["workspace_id"])
            ).scalar_one_or_none()
            session_id = conn.execute(
                select(agent_sessions.c.session_id)
                .where(agent_sessions.c.workspace_id == row["workspace_id"])
                .order_by(agent_sessions.c.created_at)
                .limit(1)
            ).scalar_one_or_none()
    return _task_record(row, node_id, session_id)
