"""A session: one ACP session, one agent process at a time, one prompt at a time.

The pure ``SessionMachine`` decides; this shell feeds it facts (with the time) and carries
out its actions: appending events to the durable log, spawning and stopping agent runs,
sending prompts and cancels. Every event is in the log before anyone sees it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from vm_agent.acp.client import AgentInfo, AgentProtocolError
from vm_agent.acp.permissions import PermissionPolicy
from vm_agent.catalog import AgentSpec
from vm_agent.containment.session import SessionContainment
from vm_agent.core import actions as a
from vm_agent.core import events as ev
from vm_agent.core.classifier import ExitFacts
from vm_agent.core.machine import SessionMachine
from vm_agent.core.vocabulary import SessionState
from vm_agent.eventlog import EventLog, SessionRecord
from vm_agent.eventlog.log import Appended
from vm_agent.jsonrpc.connection import PeerClosed
from vm_agent.jsonrpc.errors import INTERNAL_ERROR, JsonRpcError
from vm_agent.redact import Redactor
from vm_agent.session.agent_run import AgentRun, StartFailure
from vm_agent.session.config import CredentialsProvider, SessionConfig
from vm_agent.session.crash_report import CrashReport, build_crash_report
from vm_agent.session.outcome import Outcome

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# Updates relayed between two waits for the log's commit (bounds memory under a flood).
# Each wait is for the checkpoint before the last one, so one chunk commits while the
# next is read: at most two chunks are in memory and the reader never idles on a commit.
_CONFIRM_EVERY = 512


class _PromptWait:
    __slots__ = ("done", "refused")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.refused: str | None = None


class SessionRefused(Exception):
    """A request the session cannot take in its present state (e.g. a second prompt)."""


class AgentSession:
    def __init__(
        self,
        *,
        session_id: str,
        spec: AgentSpec,
        cwd: Path,
        log: EventLog,
        config: SessionConfig,
        permissions: PermissionPolicy,
        redactor: Redactor,
        credentials: CredentialsProvider | None = None,
        load_acp_session: str | None = None,
        restored: SessionRecord | None = None,
        reservation: str | dict[str, Any] | None = None,
        owner: str | None = None,
        containment: SessionContainment | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.id = session_id
        self.containment = containment
        self.spec = spec
        self.cwd = cwd
        self.log = log
        self.config = config
        self.permissions = permissions
        self.redactor = redactor
        self.credentials = credentials
        self.machine = SessionMachine(config.policy)
        self._restored = restored
        # The control plane's reservation this session runs under, kept with the session.
        self.reservation = reservation
        # The user the session belongs to (a viewer token's `sub`; None: the node's alone);
        # its agents run as that owner's agent user.
        self.owner = owner
        if restored is not None:
            # Known from the log of an earlier daemon: no process yet; recover() loads it.
            self.machine.state = SessionState.STOPPED
            self.machine.acp_session_id = restored.acp_session_id
            self.machine.load_session = bool(restored.metadata.get("load_session"))
            self.reservation = restored.metadata.get("reservation")
            owner_kept = restored.metadata.get("owner")
            self.owner = owner_kept if isinstance(owner_kept, str) else None
        self._load_first = load_acp_session
        self._clock = clock
        self._run: AgentRun | None = None
        self._tg: TaskGroup | None = None
        self._lock = anyio.Lock()
        self._deadlines_changed = anyio.Event()
        self._closed = anyio.Event()
        self._state_changed = anyio.Event()
        self.stopped_for_good = anyio.Event()
        self._prompts: dict[str, list[dict[str, Any]]] = {}
        self._waiters: dict[str, _PromptWait] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.crash_reports: list[CrashReport] = []
        self._crashed_stderr: tuple[str, bool] = ("", False)
        self._replaying = False
        self.replayed_updates = 0
        self._unconfirmed = 0
        self._checkpoint: Appended | None = None
        self.spawned_pids: list[int] = []  # every agent process this session started
        self._permission_ids = itertools.count(1)
        self._prompt_sent = anyio.Event()

    # -- queries ----------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self.machine.state

    @property
    def acp_session_id(self) -> str | None:
        return self.machine.acp_session_id

    @property
    def agent_pid(self) -> int | None:
        run = self._run
        return run.process.pid if run and run.process and not run.done.is_set() else None

    def describe(self) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "agent": self.spec.name,
            "cwd": str(self.cwd),
            "state": self.state.value,
            "acp_session_id": self.acp_session_id,
            "head_seq": self.log.head_seq(self.id),
            "prompt_id": self.machine.prompt_id,
            "error": self.machine.error,
            "reservation": self.reservation,
            "owner": self.owner,
        }

    # -- life -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Lives until the session is stopped; owns every task of the session."""
        try:
            await self._live(task_status)
        finally:
            if self.containment is not None:
                # Whatever the agent or a terminal left running dies with the cgroup.
                await self.containment.release()
            self.stopped_for_good.set()

    async def _live(self, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._deadline_loop)
            if self._restored is None:
                await self._emit_state(SessionState.STARTING, "starting the agent")
                self._start_run(0.0, self._load_first)
            else:
                recoverable = self.machine.load_session and self.acp_session_id is not None
                was = self._restored.state
                note = f"the daemon restarted (the session was {was}); " + (
                    "ask to recover it to load it in a new agent process"
                    if recoverable
                    else "it cannot be loaded again (the agent has no session/load)"
                )
                await self._emit_state(SessionState.STOPPED, note, recoverable=recoverable)
            task_status.started()
            await self._closed.wait()
            await self.stop()
            if self._run is not None:
                with anyio.move_on_after(self.config.stop_timings.term_grace_s + 5):
                    await self._run.done.wait()
            tg.cancel_scope.cancel()

    def close(self) -> None:
        """Ends the session's life in this daemon: stops its agent and its tasks."""
        self._closed.set()

    async def abandon(self, reason: str) -> None:
        """After ``run`` failed inside: the session is in error, its waiting prompts are
        refused, and the log says so if it can (the failure may have been the log's)."""
        reason = self.redactor.redact(reason)
        self.machine.state = SessionState.ERROR
        self.machine.error = reason
        for wait in self._waiters.values():
            wait.refused = reason
            wait.done.set()
        self._waiters.clear()
        self._state_changed.set()
        with anyio.CancelScope(shield=True):
            try:
                await self._emit_state(SessionState.ERROR, reason)
            except Exception as exc:
                log.warning("session %s: its error state is not in the log: %s", self.id, exc)

    @property
    def restorable(self) -> bool:
        return self.machine.load_session and self.acp_session_id is not None

    async def prompt(self, prompt_id: str, prompt: list[dict[str, Any]]) -> Outcome:
        """Runs one prompt to its outcome; the same ``prompt_id`` never runs twice.

        Callers with the same id share one run (and one refusal). A caller cancelled while
        waiting leaves the prompt running: its outcome is kept for the next asker.
        """
        if prompt_id in self.outcomes:
            return self.outcomes[prompt_id]
        wait = self._waiters.get(prompt_id)
        if wait is None:
            wait = self._waiters[prompt_id] = _PromptWait()
            self._prompts[prompt_id] = prompt
            done = await self._feed(ev.PromptRequested(self._clock(), prompt_id))
            refusal = next((x for x in done if isinstance(x, a.Refuse)), None)
            if refusal is not None:
                del self._waiters[prompt_id]
                self._prompts.pop(prompt_id, None)
                wait.refused = refusal.reason
                wait.done.set()
        await wait.done.wait()
        if wait.refused is not None:
            raise SessionRefused(wait.refused)
        return self.outcomes[prompt_id]

    async def wait_settled(self) -> SessionState:
        """Waits until the session is neither starting nor recovering; returns its state."""
        while self.state in (SessionState.STARTING, SessionState.RECOVERING):
            await self._state_changed.wait()
        async with self._lock:  # the change's own events are in the log too
            return self.state

    async def cancel(self) -> None:
        await self._feed(ev.CancelRequested(self._clock()))

    async def stop(self) -> None:
        await self._feed(ev.StopRequested(self._clock()))

    async def recover(self) -> None:
        done = await self._feed(ev.RecoverRequested(self._clock()))
        refusal = next((x for x in done if isinstance(x, a.Refuse)), None)
        if refusal is not None:
            raise SessionRefused(refusal.reason)

    # -- the machine ------------------------------------------------------------------------

    async def _feed(self, event: ev.Event) -> list[a.Action]:
        # One at a time, so the events the actions append keep the machine's order; shielded,
        # so a cancelled caller never leaves the machine's decision half carried out.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                actions = self.machine.handle(event)
                self._deadlines_changed.set()
                for act in actions:
                    await self._carry_out(act)
        return actions

    async def _carry_out(self, act: a.Action) -> None:
        match act:
            case a.StateChanged(state=state, note=note):
                await self._emit_state(state, note)
            case a.SendPrompt(prompt_id=pid):
                self._replaying = False
                prompt = self._prompts.pop(pid)
                await self.log.append(
                    self.id, "prompt.started", {"prompt_id": pid, "prompt": prompt}
                )
                self._task_group.start_soon(self._send_prompt, pid, prompt)
            case a.SendCancel():
                self._task_group.start_soon(self._send_cancel)
            case a.StopAgent(reason=reason):
                log.info("session %s: stopping the agent: %s", self.id, reason)
                if self._run is not None:
                    self._run.stop()
            case a.Restart(delay_s=delay, load=load, attempt=attempt, why=why):
                log.info(
                    "session %s: restart attempt %d in %.1fs (%s)", self.id, attempt, delay, why
                )
                self._start_run(delay, self.acp_session_id if load else None)
            case a.RecordOutcome():
                outcome = Outcome.from_action(self.id, act)
                self.outcomes[act.prompt_id] = outcome
                await self.log.append(self.id, "prompt.finished", outcome.to_json())
                wait = self._waiters.pop(act.prompt_id, None)
                if wait is not None:
                    wait.done.set()
            case a.EmitCrashReport():
                tail, cut = self._crashed_stderr
                report = build_crash_report(
                    act,
                    session_id=self.id,
                    agent=self.spec.name,
                    stderr_tail=tail,
                    stderr_cut=cut,
                    redactor=self.redactor,
                    ts=time.time(),
                )
                self.crash_reports.append(report)
                await self.log.append(self.id, "agent.crash_report", report.to_json())
            case a.Refuse():
                pass

    @property
    def _task_group(self) -> TaskGroup:
        assert self._tg is not None, "the session is not running"
        return self._tg

    async def _emit_state(self, state: SessionState, note: str | None, **extra: Any) -> None:
        data: dict[str, Any] = {"state": state.value, "note": note, **extra}
        if self.machine.acp_session_id:
            data["acp_session_id"] = self.machine.acp_session_id
        await self.log.append(self.id, "session.state", data)
        await self.log.upsert_session(
            self.id,
            agent=self.spec.name,
            cwd=str(self.cwd),
            state=state.value,
            acp_session_id=self.machine.acp_session_id,
            metadata={
                "load_session": self.machine.load_session,
                "error": self.machine.error,
                "reservation": self.reservation,
                "owner": self.owner,
            },
        )
        self._state_changed.set()
        self._state_changed = anyio.Event()

    async def _deadline_loop(self) -> None:
        while True:
            deadline = self.machine.next_deadline()
            wait = float("inf") if deadline is None else max(0.0, deadline - self._clock())
            with anyio.move_on_after(wait) as scope:
                await self._deadlines_changed.wait()
                self._deadlines_changed = anyio.Event()
            if scope.cancelled_caught:
                await self._feed(ev.Tick(self._clock()))

    # -- agent runs -------------------------------------------------------------------------

    def _start_run(self, delay: float, load: str | None) -> None:
        run = AgentRun(
            self.id,
            self.spec,
            self.cwd,
            self.config,
            self.spawned_pids.append,
            containment=self.containment,
        )
        self._run = run
        self._task_group.start_soon(self._go, run, delay, load)

    async def _go(self, run: AgentRun, delay: float, load: str | None) -> None:
        if delay > 0:
            await anyio.sleep(delay)
        if self.machine.state is SessionState.STOPPED:
            run.done.set()
            return
        self._replaying = load is not None
        await run.run(
            load_acp_session=load,
            report=self,
            on_update=self._on_update,
            on_permission=self._on_permission,
            credentials=self._credentials_with_redaction,
        )

    async def _credentials_with_redaction(self, session_id: str, spec: AgentSpec) -> dict[str, str]:
        if self.credentials is None:
            return {}
        env = dict(await self.credentials(session_id, spec))
        for value in env.values():
            self.redactor.add_secret(value)
        return env

    # RunReport: what a run tells us.

    async def opened(
        self, run: AgentRun, info: AgentInfo, acp_session_id: str, loaded: bool
    ) -> None:
        now = self._clock()
        if self.machine.state is SessionState.RECOVERING:
            await self._feed(ev.RecoverySucceeded(now, acp_session_id, loaded=loaded))
        else:
            await self._feed(ev.AgentReady(now, acp_session_id, info.load_session, loaded=loaded))

    async def failed(self, failure: StartFailure) -> None:
        message = self.redactor.redact(failure.message)
        if self.machine.state is SessionState.RECOVERING:
            self._crashed_stderr = (
                (failure.stderr_tail, False) if failure.stderr_tail else self._crashed_stderr
            )
            await self._feed(ev.RecoveryFailed(self._clock(), message, failure.retryable))
            return
        async with self._lock:
            actions = self.machine.handle(ev.StartFailed(message))
            for act in actions:
                if isinstance(act, a.StateChanged):
                    tail = self.redactor.redact(failure.stderr_tail)
                    await self._emit_state(act.state, act.note, stderr_tail=tail)
                else:
                    await self._carry_out(act)

    async def disconnected(self, run: AgentRun, exit: ExitFacts) -> None:
        if run.process is not None:
            self._crashed_stderr = (run.process.stderr.text(), run.process.stderr.cut)
        await self._feed(ev.Disconnected(self._clock(), exit))

    # -- traffic with the agent -------------------------------------------------------------

    def _on_update(self, params: Any) -> Awaitable[None] | None:
        if self._replaying:
            # History replayed by session/load is not new output: it is not re-broadcast.
            self.replayed_updates += 1
            return None
        self.machine.handle(ev.AgentOutput(self._clock()))
        # Pipelined: the seq is fixed now (arrival order); viewers see it after its commit.
        appended = self.log.submit(self.id, "acp.update", params)
        self._unconfirmed += 1
        if self._unconfirmed >= _CONFIRM_EVERY:
            # Backpressure: a flooding agent waits for the log (and the pipe fills) rather
            # than the daemon's memory growing without bound.
            self._unconfirmed = 0
            previous, self._checkpoint = self._checkpoint, appended
            if previous is not None:
                return self._confirm(previous)
        return None

    @staticmethod
    async def _confirm(appended: Appended) -> None:
        await appended.durable()

    def _on_permission(self, params: Any) -> Awaitable[dict[str, Any]]:
        request_id = f"perm-{next(self._permission_ids)}"
        return self._permission_flow(request_id, params)

    async def _permission_flow(self, request_id: str, params: dict[str, Any]) -> dict[str, Any]:
        await self.log.append(
            self.id, "permission.requested", {"request_id": request_id, "request": params}
        )
        if self.machine.state is SessionState.CANCELLING:
            result: dict[str, Any] = {"outcome": {"outcome": "cancelled"}}
        else:
            result = await self.permissions.decide(request_id, params)
        await self.log.append(self.id, "permission.resolved", {"request_id": request_id, **result})
        return result

    async def _send_prompt(self, prompt_id: str, prompt: list[dict[str, Any]]) -> None:
        run, acp_id = self._run, self.acp_session_id
        if run is None or run.client is None or acp_id is None:
            await self._feed(ev.PromptErrored(self._clock(), INTERNAL_ERROR, "no agent process"))
            return
        self._prompt_sent = sent = anyio.Event()
        try:
            stop_reason = await run.request(
                "session/prompt", run.client.prompt(acp_id, prompt, sent=sent)
            )
        except JsonRpcError as exc:
            await self._feed(ev.PromptErrored(self._clock(), exc.code, exc.message))
        except AgentProtocolError as exc:
            await self._feed(ev.PromptErrored(self._clock(), INTERNAL_ERROR, str(exc)))
        except PeerClosed:
            pass  # the run reports the disconnect with its facts
        else:
            await self._feed(ev.PromptAnswered(self._clock(), stop_reason))

    async def _send_cancel(self) -> None:
        cancel_all = getattr(self.permissions, "cancel_all", None)
        if cancel_all is not None:
            cancel_all()
        run, acp_id = self._run, self.acp_session_id
        if run is not None and run.client is not None and acp_id is not None:
            try:
                with anyio.move_on_after(self.config.policy.cancel_grace_s):
                    # A cancel written before its prompt would be lost on the agent.
                    await self._prompt_sent.wait()
                    await run.client.cancel(acp_id)
            except PeerClosed:
                pass
