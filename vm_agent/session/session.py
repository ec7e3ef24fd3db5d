"""A session: one ACP session, one agent process at a time, one prompt at a time.

The pure ``SessionMachine`` decides; this shell feeds it facts (with the time) and carries
out its actions: appending events to the durable log, spawning and stopping agent runs,
sending prompts and cancels. Every event is in the log before anyone sees it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from vm_agent.acp.permissions import PermissionPolicy
from vm_agent.common.redact import Redactor
from vm_agent.containment.session import SessionContainment
from vm_agent.core import actions as a
from vm_agent.core import events as ev
from vm_agent.core.machine import SessionMachine
from vm_agent.core.vocabulary import SessionState
from vm_agent.eventlog import EventLog, SessionRecord
from vm_agent.gitwork.spec import RepositorySpec
from vm_agent.process.catalog import AgentSpec
from vm_agent.session import traffic as t
from vm_agent.session.agent_run import AgentRun
from vm_agent.session.config import CredentialsProvider, SessionConfig, redacting
from vm_agent.session.crash_report import CrashReport
from vm_agent.session.exchange import PromptExchange
from vm_agent.session.journal import SessionJournal
from vm_agent.session.metadata import description, registry_metadata
from vm_agent.session.outcome import Outcome
from vm_agent.session.prompt_book import PromptBook, SessionRefused
from vm_agent.session.repository import clone_before_start, kept_metadata
from vm_agent.session.run_reports import RunReports
from vm_agent.session.start_settings import StartSettings, kept_settings
from vm_agent.session.usage_meter import UsageMeter

# SessionRefused lives with the prompt book; callers know it as the session's refusal.
__all__ = ["AgentSession", "SessionRefused"]

log = logging.getLogger(__name__)


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
        repository: RepositorySpec | None = None,
        settings: StartSettings | None = None,
        clock: t.Clock = time.monotonic,
    ) -> None:
        self.id = session_id
        self.settings = settings  # agentSettings: given to every agent process it runs
        self.repository = repository  # cloned before the first agent starts (issue 23)
        self.containment = containment
        self.spec = spec
        self.cwd = cwd
        self.log = log
        self.config = config
        self.redactor = redactor
        self.credentials = credentials
        # Whatever the provider hands out is a secret from then on: no log line shows it.
        self._credentials = None if credentials is None else redacting(credentials, redactor)
        self.machine = SessionMachine(config.policy_for(spec))
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
            self.reservation, self.owner, self.repository = kept_metadata(restored.metadata)
            self.settings = kept_settings(restored.metadata)
        for secret in self.settings.secret_values() if self.settings else ():
            redactor.add_secret(secret)  # MCP headers and server env: tokens, likely
        self._load_first = load_acp_session
        self._clock = clock
        self._run: AgentRun | None = None
        self._tg: TaskGroup | None = None
        self._lock = anyio.Lock()
        self._deadlines_changed = anyio.Event()
        self._closed = anyio.Event()
        self._state_changed = anyio.Event()
        self.stopped_for_good = anyio.Event()
        self._book = PromptBook()
        self.outcomes = self._book.outcomes
        self._journal = SessionJournal(log, session_id, spec.name, cwd, redactor)
        self._reports = RunReports(self.machine, self._journal, redactor, clock, self._feed)
        self.spawned_pids: list[int] = []  # every agent process this session started
        self._usage = UsageMeter(session_id)
        self._exchange = PromptExchange(
            self._feed,
            lambda: (self._run, self.acp_session_id),
            clock,
            self._usage.answered,
            config.policy.cancel_grace_s,
        )
        self._relay = t.UpdateRelay(log, session_id, self._agent_output, self._noted_update)
        self._permissions = t.PermissionFlow(
            log, session_id, permissions, lambda: self.machine.state is SessionState.CANCELLING
        )

    # -- queries ----------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self.machine.state

    @property
    def acp_session_id(self) -> str | None:
        return self.machine.acp_session_id

    @property
    def permissions(self) -> PermissionPolicy:
        return self._permissions.policy

    @property
    def replayed_updates(self) -> int:
        """Updates a session/load replayed (history, not re-broadcast)."""
        return self._relay.replayed_updates

    @property
    def crash_reports(self) -> list[CrashReport]:
        return self._journal.crash_reports

    @property
    def agent_pid(self) -> int | None:
        run = self._run
        return run.process.pid if run and run.process and not run.done.is_set() else None

    def describe(self) -> dict[str, Any]:
        return description(self)

    @property
    def start_refusal(self) -> str | None:
        """Why the agent could not take the start's settings (the start is then refused)."""
        return self._reports.settings_refusal

    def start_outcome(self, prompt_id: str) -> Outcome | None:
        """What a prompt meets in a session whose agent could not be started (else None)."""
        if self.state is not SessionState.ERROR:
            return None
        methods = self._reports.auth_methods
        return Outcome.for_failed_start(self.id, prompt_id, self.machine, methods)

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
                if await clone_before_start(self, self.repository, self.config.git):
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
        """Ends the session's life in this daemon (stops its agent and tasks, no session/close)."""
        self._closed.set()

    async def abandon(self, reason: str) -> None:
        """After ``run`` failed inside: the session is in error, its waiting prompts are
        refused, and the log says so if it can (the failure may have been the log's)."""
        reason = self.redactor.redact(reason)
        self.machine.state = SessionState.ERROR
        self.machine.error = reason
        self._book.refuse_all(reason)
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
        wait = self._book.waiting(prompt_id)
        if wait is None:
            wait = self._book.ask(prompt_id, prompt)
            done = await self._feed(ev.PromptRequested(self._clock(), prompt_id))
            refusal = next((x for x in done if isinstance(x, a.Refuse)), None)
            if refusal is not None:
                self._book.refuse(prompt_id, refusal.reason)
        return await self._book.ending(prompt_id, wait)

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

    async def stop_and_wait(self) -> None:
        """``stop``, then wait until the agent's tree and the session's cgroup are empty."""
        run, timings = self._run, self.config.stop_timings
        await self.stop()
        if run is not None:
            if run.client is None and run.process is not None:  # still starting: the run
                await run.process.stop(timings)  # heeds its stop only once the start is over
            with anyio.move_on_after(timings.stdin_grace_s + timings.term_grace_s + 10):
                await run.done.wait()
        if self.containment is not None and self.state is SessionState.STOPPED:
            await self.containment.wait_idle(lambda: self.state is SessionState.STOPPED)

    async def recover(self) -> None:
        done = await self._feed(ev.RecoverRequested(self._clock()))
        refusal = next((x for x in done if isinstance(x, a.Refuse)), None)
        if refusal is not None:
            raise SessionRefused(refusal.reason)

    # -- the machine ------------------------------------------------------------------------

    async def _feed(self, event: ev.Event, **state_extra: Any) -> list[a.Action]:
        """``state_extra``: facts for the ``session.state`` event this one may cause."""
        # One at a time, so the events the actions append keep the machine's order; shielded,
        # so a cancelled caller never leaves the machine's decision half carried out.
        with anyio.CancelScope(shield=True):
            async with self._lock:
                actions = self.machine.handle(event)
                self._deadlines_changed.set()
                for act in actions:
                    await self._carry_out(act, state_extra)
        return actions

    async def _carry_out(self, act: a.Action, state_extra: dict[str, Any]) -> None:
        match act:
            case a.StateChanged(state=state, note=note):
                await self._emit_state(state, note, **state_extra)
            case a.SendPrompt(prompt_id=pid, send=send):
                self._relay.replaying = False
                prompt = self._book.take(pid)
                self._usage.prompt_started()
                await self._journal.prompt_started(pid, prompt)
                if send:  # else a new process gets it first (ResendPrompt)
                    self._task_group.start_soon(self._exchange.send, prompt)
            case a.RetryPrompt():
                await self._journal.prompt_retry(act)
            case a.ResendPrompt(prompt_id=pid):
                self._relay.replaying = False  # a new process's load replay is over
                self._task_group.start_soon(self._exchange.send, self._book.again(pid))
            case a.SendCancel():
                self._permissions.cancel_all()
                self._task_group.start_soon(self._exchange.cancel)
            case a.StopAgent(reason=reason):
                log.info("session %s: stopping the agent: %s", self.id, reason)
                if self._run is not None:  # a session's end (not the daemon's) closes it
                    self._run.stop(
                        close=self.state is SessionState.STOPPED and not self._closed.is_set()
                    )
            case a.Restart(delay_s=delay, load=load, attempt=attempt, why=why):
                log.info(
                    "session %s: restart attempt %d in %.1fs (%s)", self.id, attempt, delay, why
                )
                self._start_run(delay, self.acp_session_id if load else None)
            case a.RecordOutcome():
                methods, usage = self._reports.auth_methods, self._usage.prompt_ended()
                outcome = Outcome.from_action(self.id, act, methods, usage)
                await self._journal.outcome(outcome)
                self._book.finish(outcome)
            case a.EmitCrashReport():
                await self._journal.crash_report(act)
            case a.Refuse():
                pass

    @property
    def _task_group(self) -> TaskGroup:
        assert self._tg is not None, "the session is not running"
        return self._tg

    async def _emit_state(self, state: SessionState, note: str | None, **extra: Any) -> None:
        await self._journal.state(
            state,
            note,
            acp_session_id=self.machine.acp_session_id,
            metadata=registry_metadata(self),
            extra={**self._reports.auth_fields(), **extra},
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
            settings=self.settings,
        )
        self._run = run
        self._usage.restart()
        self._exchange.restart()
        self._task_group.start_soon(self._go, run, delay, load)

    async def _go(self, run: AgentRun, delay: float, load: str | None) -> None:
        if delay > 0:
            await anyio.sleep(delay)
        if self.machine.state is SessionState.STOPPED:
            run.done.set()
            return
        self._relay.replaying = load is not None
        await run.run(
            load_acp_session=load,
            report=self._reports,
            on_update=self._relay,
            on_permission=self._permissions,
            credentials=self._credentials,
        )
        if self.start_refusal is not None:
            self.close()  # the agent cannot take its settings: the session ends here

    # -- traffic with the agent -------------------------------------------------------------

    def _agent_output(self) -> None:
        self.machine.handle(ev.AgentOutput(self._clock()))

    def _noted_update(self, update: Any) -> None:
        self._usage.noted_update(update)
        self._exchange.noted_update(update)
