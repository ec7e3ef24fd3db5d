"""The dispatcher's shell: each pass claims due tasks with a lease (leases.py), reads
what the node reported, records the facts, asks `reconcile.next_step` for one step, takes
it on the node and records it. Several replicas run it on one database; a replica that
dies mid-step leaves its lease to expire and another takes the same (idempotent) step.

Claiming: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite an UPDATE that
takes a free lease only if the row's version is still the one read.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
from anyio import to_thread
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine, update

from control_plane.dispatch import deliver, runs, setting_changes, workspaces
from control_plane.dispatch import status as st
from control_plane.dispatch.leases import claim, release
from control_plane.dispatch.observe import Snapshot, observe
from control_plane.dispatch.reconcile import (
    AnswerPermission,
    CancelPrompt,
    ChangeSetting,
    ForgetSession,
    OpenPullRequest,
    PushWorkspace,
    Record,
    ReleaseWorkspace,
    SendPrompt,
    StartSession,
    Step,
    StopSession,
    Timing,
    Wait,
    finished,
    next_step,
)
from control_plane.github import access
from control_plane.github.delivery import GitHubDelivery
from control_plane.storage.db import task_permission_answers
from vm_agent.jsonrpc.errors import JsonRpcError

log = logging.getLogger("control_plane.dispatch")

UNKNOWN_SESSION = -32002
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0  # a node that could not be reached
STEPS_PER_CLAIM = 8


class DispatchSettings(BaseSettings):
    """CONTROL_PLANE_DISPATCH_* variables (docs/control-plane.md)."""

    model_config = SettingsConfigDict(env_prefix="CONTROL_PLANE_DISPATCH_", extra="ignore")

    enabled: bool = True
    pass_interval_s: float = 0.5
    lease_s: float = 120.0  # past the longest step (a session's start)
    batch: int = 50
    concurrency: int = 16
    start_limit_s: float = 90.0  # session/start: the daemon bounds an agent's start at 60 s
    call_limit_s: float = 30.0
    push_limit_s: float = 660.0  # workspace/push: the daemon bounds a push at 10 minutes
    prompt_limit_s: float = 24 * 3600.0
    node_silent_after_s: float = 300.0
    node_wait_s: float = 1800.0
    resend_after_s: float = 10.0
    # FAULT INJECTION, for the tests only (tests/dispatch/test_replica_faults.py): the
    # replica SIGKILLs itself at this point of a step (claimed, session_started,
    # prompt_sent, outcome_seen, pushed, pull_request_opened), holding its lease, as a
    # crash would.
    kill_at: str | None = None

    @property
    def timing(self) -> Timing:
        return Timing(self.node_silent_after_s, self.node_wait_s, self.resend_after_s)


class NodeCalls(Protocol):
    """What the dispatcher needs of its nodes (control_plane.nodes_link.NodeLinks)."""

    in_flight: set[str]

    async def call(
        self, target: Any, method: str, params: dict[str, Any], *, limit_s: float
    ) -> Any: ...

    async def start_prompt(
        self, target: Any, params: dict[str, Any], on_outcome: Any, *, limit_s: float
    ) -> None: ...


def _mark_answer(engine: Engine, task_id: str, request_id: str, option_id: str, now: float) -> None:
    with engine.begin() as conn:
        # A policy's answer is recorded as it is sent; a user's was recorded by the API.
        runs.record_answer(conn, task_id, request_id, option_id, by="policy", now=now)
        conn.execute(
            update(task_permission_answers)
            .where(
                task_permission_answers.c.task_id == task_id,
                task_permission_answers.c.request_id == request_id,
            )
            .values(sent_at=now)
        )


def _fault(settings: DispatchSettings, point: str) -> None:
    if settings.kill_at == point:
        log.error("fault injection: killed at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        nodes: NodeCalls,
        clock: Any,
        settings: DispatchSettings | None = None,
        *,
        node_domain: str,
        github: GitHubDelivery | None = None,
    ) -> None:
        self.engine = engine
        self.github = github
        self.node_domain = node_domain
        self.nodes = nodes
        self.clock = clock
        self.settings = settings or DispatchSettings()
        self.owner = f"{socket.gethostname()[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.passes = 0
        self._unreachable: dict[str, tuple[int, float]] = {}  # node: failures, retry at
        self._wake = anyio.Event()

    async def run(self) -> None:
        """Passes until cancelled."""
        limiter = anyio.CapacityLimiter(self.settings.concurrency)
        while True:
            try:
                ids = await to_thread.run_sync(
                    claim,
                    self.engine,
                    self.owner,
                    self.clock(),
                    self.settings.lease_s,
                    self.settings.batch,
                )
                if ids:
                    _fault(self.settings, "claimed")
                async with anyio.create_task_group() as tg:
                    for task_id in ids:
                        tg.start_soon(self._one, task_id, limiter)
            except Exception:
                log.exception("dispatch pass failed; the next pass tries again")
            self.passes += 1
            with anyio.move_on_after(self.settings.pass_interval_s):
                await self._wake.wait()
            self._wake = anyio.Event()

    def wake(self) -> None:
        """Pass now (a task was submitted or asked something here), not at the next tick."""
        self._wake.set()

    async def _one(self, task_id: str, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            try:
                # Step on while each step moves the task (ready -> start -> prompt) rather
                # than one step a pass; a Wait (or a bound) ends this task's turn.
                began = self.clock()
                for _ in range(STEPS_PER_CLAIM):
                    taken = await self.step(task_id)
                    if taken is None or isinstance(taken, Wait):
                        break
                    if self.clock() - began > self.settings.lease_s / 2:
                        break  # well inside the lease: the rest on a later pass
            except Exception as exc:
                log.warning("task %s: step failed (%s); retried on a later pass", task_id, exc)
            finally:
                with anyio.CancelScope(shield=True):
                    await to_thread.run_sync(release, self.engine, task_id, self.owner)

    async def _apply(
        self, task_id: str, facts: Sequence[st.Fact], **values: Any
    ) -> runs.Applied | None:
        applied = await to_thread.run_sync(
            lambda: runs.apply(self.engine, task_id, facts, self.clock(), values=values)
        )
        if applied is not None and any(t.outcome for t in applied.transitions):
            _fault(self.settings, "outcome_seen")
        return applied

    async def _observe(self, task_id: str) -> Snapshot | None:
        in_flight = frozenset(self.nodes.in_flight)
        git = None if self.github is None else self.github.identity
        return await to_thread.run_sync(
            lambda: observe(
                self.engine, task_id, self.clock(), in_flight, self.node_domain, git=git
            )
        )

    async def step(self, task_id: str) -> Step | None:
        """One pass over one task: record what the node reported, then take one step."""
        snap = await self._observe(task_id)
        if snap is None:
            return None
        if snap.new_seq is not None:
            await self._apply(task_id, snap.facts, events_seq=snap.new_seq)
            snap = await self._observe(task_id)
            if snap is None:
                return None
        step = next_step(snap.observed, snap.node_id, self.settings.timing)
        if not isinstance(step, Wait):
            log.info("task %s (%s): %s", task_id, snap.observed.status, step)
        return step if await self._take(task_id, snap, step) else Wait("not now")

    async def _take(self, task_id: str, snap: Snapshot, step: Step) -> bool:
        """Takes the step; False if it was not taken now (a wait, no address, a backoff)."""
        if isinstance(step, Wait):
            return False
        if isinstance(step, Record):
            await self._apply(task_id, [step.fact])
            return True
        if isinstance(step, ReleaseWorkspace):
            await to_thread.run_sync(
                workspaces.release_workspace, self.engine, snap.workspace_id, self.clock()
            )
            return True
        if isinstance(step, OpenPullRequest):
            await self._open_pull(task_id, snap)
            return True
        if isinstance(step, ForgetSession):
            log.warning("task %s: node %s is silent; its session is left", task_id, snap.node_id)
            await self._apply(task_id, [], session_stopped_at=self.clock())
            return True
        if snap.target is None:
            log.info("task %s: no address known for node %s", task_id, snap.node_id)
            return False
        # A node that could not be reached is tried again after a backoff, not every pass.
        failures, until = self._unreachable.get(snap.node_id, (0, 0.0))
        if self.clock() < until:
            return False
        try:
            await self._on_node(task_id, snap, step)
        except JsonRpcError:
            raise
        except Exception:
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**failures)
            self._unreachable[snap.node_id] = (failures + 1, self.clock() + delay)
            raise
        self._unreachable.pop(snap.node_id, None)
        return True

    async def _on_node(self, task_id: str, snap: Snapshot, step: Step) -> None:
        s = self.settings
        match step:
            case StartSession():
                await self._start(task_id, snap)
            case PushWorkspace():
                await self._push(task_id, snap)
            case SendPrompt(prompt_id):
                await self._prompt(task_id, snap, prompt_id)
            case AnswerPermission(request_id, option_id):
                params = {
                    "session_id": snap.session_id,
                    "request_id": request_id,
                    "option_id": option_id,
                }
                try:
                    await self.nodes.call(
                        snap.target, "permission/respond", params, limit_s=s.call_limit_s
                    )
                except JsonRpcError as exc:  # resolved meanwhile (a cancel, the agent gone)
                    log.info("task %s: permission %s not delivered: %s", task_id, request_id, exc)
                await to_thread.run_sync(
                    _mark_answer, self.engine, task_id, request_id, option_id, self.clock()
                )
            case ChangeSetting():
                await setting_changes.relay(self, snap.target, snap.session_id, step)
            case CancelPrompt():
                params = {"session_id": snap.session_id}
                await self.nodes.call(snap.target, "session/cancel", params, limit_s=s.call_limit_s)
                await self._apply(task_id, [], cancel_sent_at=self.clock())
            case StopSession():
                params = {"session_id": snap.session_id}
                try:
                    await self.nodes.call(
                        snap.target, "session/stop", params, limit_s=s.call_limit_s
                    )
                except JsonRpcError as exc:
                    if exc.code != UNKNOWN_SESSION:
                        raise
                await self._apply(task_id, [], session_stopped_at=self.clock())

    async def _start(self, task_id: str, snap: Snapshot) -> None:
        try:
            described = await self.nodes.call(
                snap.target, "session/start", snap.start_params, limit_s=self.settings.start_limit_s
            )
        except JsonRpcError as exc:
            # Refused: perhaps because our own start (a replica that died after it) made the
            # session already. The node's list says; its words are not parsed.
            listed = await self.nodes.call(
                snap.target, "session/list", {}, limit_s=self.settings.call_limit_s
            )
            ids = {d.get("session_id") for d in listed.get("sessions", []) if isinstance(d, dict)}
            if snap.session_id in ids:
                await self._apply(task_id, [st.SessionStarted()], session_started_at=self.clock())
                return
            await self._apply(task_id, [st.SessionStartFailed(f"the node refused: {exc.message}")])
            return
        now = self.clock()
        d = described if isinstance(described, dict) else {}
        methods = d.get("auth_methods")
        fact: st.Fact = st.SessionStarted()
        if isinstance(methods, list) and methods:
            reason = str(d.get("error") or "the agent needs credentials")
            fact = st.AuthRequired(tuple(m for m in methods if isinstance(m, dict)), reason)
        elif d.get("state") == "error":
            fact = st.SessionStartFailed(str(d.get("error") or "the agent did not start"))
        _fault(self.settings, "session_started")  # on the node, not yet recorded
        # Started (even in error): the session exists on the node and is stopped at the end.
        await self._apply(task_id, [st.SessionStarted(), fact], session_started_at=now)

    async def _push(self, task_id: str, snap: Snapshot) -> None:
        """The node pushes the task branch; its answer is recorded (a refusal ends the task
        failed: the work did not come back). Pushed again after a crash: the same answer."""
        assert snap.delivery is not None
        params = {"session_id": snap.session_id}
        try:
            answer = await self.nodes.call(
                snap.target, "workspace/push", params, limit_s=self.settings.push_limit_s
            )
        except JsonRpcError as exc:
            await self._apply(task_id, [st.DeliveryFailed(f"the push failed: {exc.message}")])
            return
        _fault(self.settings, "pushed")  # on the remote, not yet recorded
        pushed = deliver.push_answer(answer, snap.delivery.branch)
        if isinstance(pushed, str):
            await self._apply(task_id, [st.DeliveryFailed(pushed)])
            return
        await to_thread.run_sync(
            lambda: access.record_push(
                self.engine,
                snap.workspace_id,
                base_branch=pushed.base_branch,
                head_commit=pushed.head_commit,
                pushed=pushed.pushed,
                reason=pushed.reason,
                now=self.clock(),
            )
        )

    async def _open_pull(self, task_id: str, snap: Snapshot) -> None:
        assert snap.delivery is not None
        prompt = next(iter(snap.prompt_blocks.values()), None)  # in seq order: the first
        failed = await deliver.open_pull_request(
            self.engine,
            self.github,
            snap.workspace_id,
            snap.delivery,
            prompt=prompt,
            before_record=lambda: _fault(self.settings, "pull_request_opened"),
        )
        if failed is not None:
            await self._apply(task_id, [failed])

    async def _prompt(self, task_id: str, snap: Snapshot, prompt_id: str) -> None:
        blocks = snap.prompt_blocks[prompt_id]
        params = {"session_id": snap.session_id, "prompt": blocks, "prompt_id": prompt_id}

        async def on_outcome(
            _session_id: str, pid: str, result: dict[str, Any] | None, error: JsonRpcError | None
        ) -> None:
            if result is not None:
                fact = finished({**result, "prompt_id": pid})
            else:
                assert error is not None
                reason = f"the node refused the prompt: {error.message}"
                fact = st.PromptFinished(pid, "failed", reason=reason, error_code=error.code)
            try:
                # sent first: the answer may come before the pass that sent it records that
                await self._apply(task_id, [st.PromptSent(pid), fact])
            except Exception:
                log.exception("task %s: could not record prompt %s's outcome", task_id, pid)

        await self.nodes.start_prompt(
            snap.target, params, on_outcome, limit_s=self.settings.prompt_limit_s
        )
        _fault(self.settings, "prompt_sent")  # on the wire, not yet recorded
        await self._apply(task_id, [st.PromptSent(prompt_id)])
