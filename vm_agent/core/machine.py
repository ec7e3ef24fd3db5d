"""The session state machine (docs/outcomes.md): facts in, decisions out.

Like h11, it owns no sockets, processes or clocks: the shell tells it what happened
(with the time) and carries out the actions it returns, in order. Every prompt it accepts
ends in exactly one ``RecordOutcome``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vm_agent.core import actions as a
from vm_agent.core import events as e
from vm_agent.core.answers import failure_note, failure_outcome, prompt_answer, refusal
from vm_agent.core.classifier import Classification, DisconnectFacts, classify
from vm_agent.core.kinds import RestartKind, Stopping
from vm_agent.core.machine_state import MachineState
from vm_agent.core.policy import SessionPolicy
from vm_agent.core.provider_errors import AUTH_REQUIRED_CODE
from vm_agent.core.vocabulary import DisconnectClass, OutcomeKind, SessionState

__all__ = ["SessionMachine", "SessionPolicy"]

S = SessionState


@dataclass
class SessionMachine(MachineState):
    # -- the one entry point ----------------------------------------------------------------

    def handle(self, event: e.Event) -> list[a.Action]:
        match event:
            case e.AgentReady():
                return self._on_ready(event)
            case e.StartFailed():
                return self._on_start_failed(event)
            case e.PromptRequested():
                return self._on_prompt(event)
            case e.AgentOutput():
                waiting = self._retry_at is not None  # late output of a failed attempt
                if self.state is S.PROMPTING and self.policy.no_output_timeout_s and not waiting:
                    self._arm_output_deadline(event.now)
                return []
            case e.PromptAnswered() | e.PromptErrored():
                return self._on_answer(event)
            case e.CancelRequested():
                return self._on_cancel(event)
            case e.Tick():
                return self._on_tick(event.now)
            case e.Disconnected():
                return self._on_disconnect(event)
            case e.RecoverySucceeded():
                return self._on_recovered(event)
            case e.RecoveryFailed():
                return self._on_recovery_failed(event)
            case e.StopRequested():
                return self._on_stop()
            case e.RecoverRequested():
                return self._on_recover_requested()
        raise TypeError(f"unknown event {event!r}")  # pragma: no cover

    # -- handlers ---------------------------------------------------------------------------

    def _on_ready(self, ev: e.AgentReady) -> list[a.Action]:
        if self.state is not S.STARTING:
            return []
        self.acp_session_id = ev.acp_session_id
        self.load_session = ev.load_session
        self.resume_session = ev.resume
        self._recovered_process = False
        note = "ACP session loaded" if ev.loaded else "ACP session opened"
        return self._enter(S.READY, note)

    def _on_start_failed(self, ev: e.StartFailed) -> list[a.Action]:
        if self.state is not S.STARTING:
            return []
        self.error = ev.message
        self.error_outcome = failure_outcome(ev.error_code, ev.timed_out)
        self.error_code = ev.error_code
        return self._enter(S.ERROR, failure_note(self.error_outcome, ev.message))

    def _on_prompt(self, ev: e.PromptRequested) -> list[a.Action]:
        if self.state is not S.READY:
            return [a.Refuse(refusal(self.state, self.error))]
        self.prompt_id = ev.prompt_id
        if self._failed_turn and self.resume_session and self.acp_session_id:
            # A failed turn's process is not used again (claude-agent-acp 0.23.1 ends the
            # next prompt there at once, empty and stale): a new one resumes the session
            # and gets this prompt, as a retry's does.
            self.prompt_attempt, self._stopping, self._retry_delay = 0, Stopping.RETRY, 0.0
            why = "a new agent process for the prompt after a failed turn"
            return [*self._enter(S.PROMPTING), a.SendPrompt(ev.prompt_id, send=False),
                    a.StopAgent(why)]  # fmt: skip
        self.prompt_attempt = 1
        self._arm_prompt(ev.now)
        return [*self._enter(S.PROMPTING), a.SendPrompt(ev.prompt_id)]

    def _arm_prompt(self, now: float) -> None:
        """A send of the prompt: its deadlines start now."""
        self._stopping = Stopping.NO
        p = self.policy
        self._prompt_deadline = now + p.prompt_timeout_s if p.prompt_timeout_s else None
        self._output_deadline = None
        if p.no_output_timeout_s:
            self._arm_output_deadline(now)

    def _on_answer(self, ev: e.PromptAnswered | e.PromptErrored) -> list[a.Action]:
        if self.state not in (S.PROMPTING, S.CANCELLING) or self.prompt_id is None:
            return []
        if self._stopping is not Stopping.NO or self._retry_at is not None:
            return []  # we already decided to stop it; the disconnect will settle the outcome
        end = prompt_answer(
            self.prompt_id,
            ev,
            cancelling=self.state is S.CANCELLING,
            attempt=self.prompt_attempt,
            policy=self.policy,
        )
        if isinstance(end, a.RetryPrompt) and self.resume_session and self.acp_session_id:
            # A new process resumes the session and gets the prompt: an agent's state after
            # a failed turn is its own (claude-agent-acp 0.23.1 answers the next prompt in
            # that process with the failed turn's stale end, at once and empty). Only with
            # session/resume: gemini-cli advertises loadSession, but its load fails.
            self._stopping, self._retry_delay = Stopping.RETRY, end.delay_s
            self._clear_deadlines()
            return [end, a.StopAgent("sending the prompt again in a new agent process")]
        if isinstance(end, a.RetryPrompt):
            # The turn is over on the agent's side; the prompt waits, still running, for
            # its next send in the same process. No output is expected meanwhile.
            self._retry_at = ev.now + end.delay_s
            self._output_deadline = None
            return [end]
        self._end_prompt()
        self._failed_turn = end.outcome is OutcomeKind.FAILED
        auth = end.outcome is OutcomeKind.AUTH_REQUIRED
        return [end, *self._enter(S.READY, "the agent needs authentication" if auth else None)]

    def _on_cancel(self, ev: e.CancelRequested) -> list[a.Action]:
        if self.state is S.PROMPTING and self._retry_at is not None and self.prompt_id:
            # Between two attempts no turn runs on the agent: nothing to send a cancel to.
            pid = self.prompt_id
            self._end_prompt()
            reason = "cancelled while waiting to send the prompt again"
            return [
                a.RecordOutcome(pid, OutcomeKind.CANCELLED, reason=reason),
                *self._enter(S.READY),
            ]
        if self.state is S.PROMPTING and self._stopping is Stopping.RETRY and self.prompt_id:
            # The process is going for a retry: the prompt ends now, the new process stays.
            pid, self.prompt_id = self.prompt_id, None
            reason = "cancelled while waiting to send the prompt again"
            return [a.RecordOutcome(pid, OutcomeKind.CANCELLED, reason=reason)]
        if self.state is S.PROMPTING:
            self._grace_deadline = ev.now + self.policy.cancel_grace_s
            return [*self._enter(S.CANCELLING), a.SendCancel()]
        if self.state is S.RECOVERING and self.prompt_id is not None:
            # The prompt's turn is over for the person; recovery still brings the session back.
            pid, self.prompt_id = self.prompt_id, None
            reason = "cancelled while the agent was being recovered"
            return [a.RecordOutcome(pid, OutcomeKind.CANCELLED, reason=reason)]
        return []

    def _on_tick(self, now: float) -> list[a.Action]:
        if self.state not in (S.PROMPTING, S.CANCELLING) or self._stopping is not Stopping.NO:
            return []
        if self._prompt_deadline is not None and now >= self._prompt_deadline:
            self._stopping = Stopping.DEADLINE
            return [a.StopAgent("the prompt deadline passed")]
        if self._output_deadline is not None and now >= self._output_deadline:
            self._stopping = Stopping.DEADLINE
            return [a.StopAgent("the agent produced no output before the no-output deadline")]
        if self._grace_deadline is not None and now >= self._grace_deadline:
            self._stopping = Stopping.CANCEL
            return [a.StopAgent("the agent did not answer the cancel within the grace period")]
        if self._retry_at is not None and now >= self._retry_at and self.prompt_id is not None:
            self._retry_at = None
            self.prompt_attempt += 1
            if self.policy.no_output_timeout_s:
                self._arm_output_deadline(now)
            return [a.ResendPrompt(self.prompt_id, self.prompt_attempt)]
        return []

    def _on_disconnect(self, ev: e.Disconnected) -> list[a.Action]:
        if self.state is S.RECOVERING:
            return self._on_recovery_failed(
                e.RecoveryFailed(ev.now, ev.exit.describe(), retryable=True)
            )
        if self.state is S.STARTING:
            return self._on_start_failed(e.StartFailed(ev.exit.describe()))
        if self.state not in (S.READY, S.PROMPTING, S.CANCELLING):
            return []
        if self._stopping is Stopping.RETRY:  # we stopped it to retry: not a crash
            self._stopping = Stopping.NO
            why = "a new process for the prompt's next attempt"
            return self._restart(ev.now, RestartKind.RETRY, why, delay=self._retry_delay)
        verdict = classify(
            DisconnectFacts(
                exit=ev.exit,
                stop_requested=self._stopping is Stopping.SESSION,
                cancel_pending=self.state is S.CANCELLING,
                deadline_passed=self._stopping is Stopping.DEADLINE,
                load_session_supported=self.load_session,
                acp_session_id_known=self.acp_session_id is not None,
                restarts_in_window=self.restarts_in_window(ev.now),
                restart_budget=self.policy.restart_budget,
                min_uptime_s=self.policy.min_uptime_s,
                started_by_recovery=self._recovered_process,
            )
        )
        pid = self.prompt_id
        self._clear_deadlines()
        self._stopping = Stopping.NO
        if verdict.kind is DisconnectClass.RESUMABLE:
            self._crash = (verdict, ev.exit)
            return self._restart(ev.now, RestartKind.CRASH, verdict.reason)
        if verdict.kind is DisconnectClass.CRASHED:
            self.prompt_id = None
            self.error = verdict.reason
            out: list[a.Action] = []
            if pid is not None:
                out.append(a.RecordOutcome(pid, OutcomeKind.CRASHED, reason=verdict.reason))
            out.append(a.EmitCrashReport(verdict, ev.exit, recovered=False, recovery_error=None))
            return out + self._enter(S.ERROR, verdict.reason)
        # timeout or cancelled: the prompt ends now; a fresh process brings the session back
        self.prompt_id = None
        kind = (
            OutcomeKind.TIMEOUT
            if verdict.kind is DisconnectClass.TIMEOUT
            else OutcomeKind.CANCELLED
        )
        out = [a.RecordOutcome(pid, kind, reason=verdict.reason)] if pid is not None else []
        return out + self._restart(ev.now, RestartKind.RESET, verdict.reason)

    def _on_recovered(self, ev: e.RecoverySucceeded) -> list[a.Action]:
        if self.state is not S.RECOVERING:
            return []
        self.acp_session_id = ev.acp_session_id
        self._recovered_process = self._restart_kind is RestartKind.CRASH
        out: list[a.Action] = []
        if self._crash is not None:
            verdict, exit_facts = self._crash
            self._crash = None
            if self.prompt_id is not None:
                out.append(
                    a.RecordOutcome(self.prompt_id, OutcomeKind.RECOVERED, reason=verdict.reason)
                )
            out.append(a.EmitCrashReport(verdict, exit_facts, recovered=True, recovery_error=None))
        elif self._restart_kind is RestartKind.RETRY and self.prompt_id is not None:
            self.prompt_attempt += 1
            self._arm_prompt(ev.now)
            again = " again" if self.prompt_attempt > 1 else ""
            note = f"a new agent process loaded the session; the prompt goes{again}"
            resend = a.ResendPrompt(self.prompt_id, self.prompt_attempt)
            return [*self._enter(S.PROMPTING, note), resend]
        self.prompt_id = None
        self.error = None
        self.error_outcome = self.error_code = None
        new = "opened a new ACP session (the agent cannot load sessions)"
        note = f"a new agent process {'loaded the session' if ev.loaded else new}"
        return out + self._enter(S.READY, note)

    def _on_recovery_failed(self, ev: e.RecoveryFailed) -> list[a.Action]:
        if self.state is not S.RECOVERING:
            return []
        now, message = ev.now, ev.message
        needs_auth = ev.error_code == AUTH_REQUIRED_CODE
        if (
            self._restart_kind is RestartKind.CRASH
            and ev.retryable
            and not needs_auth
            and self.restarts_in_window(now) < self.policy.restart_budget
        ):
            return self._restart(now, RestartKind.CRASH, message)
        out: list[a.Action] = []
        reason = f"recovery failed: {message}"
        if self._crash is not None:
            verdict, exit_facts = self._crash
            self._crash = None
            if not needs_auth and self.restarts_in_window(now) >= self.policy.restart_budget:
                reason += f" (restart budget of {self.policy.restart_budget} spent)"
            crashed = Classification(DisconnectClass.CRASHED, f"{verdict.reason}; {reason}")
            if self.prompt_id is not None:
                # An agent that asks for authentication on load is not a crash for the
                # person: they have something to provide (docs/outcomes.md).
                kind = OutcomeKind.AUTH_REQUIRED if needs_auth else OutcomeKind.CRASHED
                code = ev.error_code if needs_auth else None
                out.append(
                    a.RecordOutcome(self.prompt_id, kind, reason=crashed.reason, error_code=code)
                )
            out.append(
                a.EmitCrashReport(crashed, exit_facts, recovered=False, recovery_error=message)
            )
        elif self.prompt_id is not None:  # the new process of a retry did not come up
            kind = failure_outcome(ev.error_code, timed_out=False)
            why = f"the prompt could not be sent again: {reason}"
            out.append(a.RecordOutcome(self.prompt_id, kind, reason=why, error_code=ev.error_code))
        self.prompt_id = None
        self.error = reason
        self.error_outcome = failure_outcome(ev.error_code, ev.timed_out)
        self.error_code = ev.error_code
        return out + self._enter(S.ERROR, failure_note(self.error_outcome, reason))

    def _on_stop(self) -> list[a.Action]:
        if self.state is S.STOPPED:
            return []
        out: list[a.Action] = []
        if self.prompt_id is not None:
            out.append(
                a.RecordOutcome(
                    self.prompt_id, OutcomeKind.CANCELLED, reason="the session was stopped"
                )
            )
        if self._crash is not None:
            verdict, exit_facts = self._crash
            out.append(
                a.EmitCrashReport(verdict, exit_facts, recovered=False, recovery_error="stopped")
            )
            self._crash = None
        self.prompt_id = None
        self._clear_deadlines()
        self._stopping = Stopping.SESSION
        return [*out, a.StopAgent("the session was stopped"), *self._enter(S.STOPPED)]

    def _on_recover_requested(self) -> list[a.Action]:
        if self.state not in (S.STOPPED, S.ERROR):
            return [a.Refuse(f"the session is {self.state.value}, not stopped or in error")]
        if not (self.load_session and self.acp_session_id):
            return [a.Refuse("the agent cannot load this session (no loadSession or no ACP id)")]
        self._stopping = Stopping.NO
        self.error_outcome = self.error_code = None
        self._restart_kind = RestartKind.MANUAL
        self._attempt = 1
        return [
            *self._enter(S.RECOVERING, "loading the session in a new agent process"),
            a.Restart(0.0, load=True, attempt=1, why="recovery was asked for"),
        ]
