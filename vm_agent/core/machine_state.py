"""The session machine's state and the helpers its handlers share (core/machine.py has
the handlers): what is recorded of the session, its prompt, its deadlines and restarts."""

from __future__ import annotations

from dataclasses import dataclass, field

from vm_agent.core import actions as a
from vm_agent.core.classifier import Classification, ExitFacts
from vm_agent.core.kinds import RestartKind, Stopping
from vm_agent.core.policy import SessionPolicy
from vm_agent.core.vocabulary import OutcomeKind, SessionState

S = SessionState


@dataclass
class MachineState:
    policy: SessionPolicy = field(default_factory=SessionPolicy)
    state: SessionState = S.STARTING
    acp_session_id: str | None = None
    load_session: bool = False
    resume_session: bool = False
    prompt_id: str | None = None
    error: str | None = None
    # What a start or recovery failure means to someone who wanted a prompt: the agent
    # needs authentication, it missed the start deadline, or it failed. None: no such error.
    error_outcome: OutcomeKind | None = None
    error_code: int | None = None
    _stopping: Stopping = Stopping.NO
    _prompt_deadline: float | None = None
    _output_deadline: float | None = None
    _grace_deadline: float | None = None
    # A transient provider error's backoff: the prompt is sent again then (issue 25).
    _retry_at: float | None = None
    prompt_attempt: int = 0  # sends of the running prompt so far
    _restarts: list[float] = field(default_factory=list)
    _restart_kind: RestartKind = RestartKind.CRASH
    _attempt: int = 0
    _crash: tuple[Classification, ExitFacts] | None = None  # waits for the recovery's result
    _retry_delay: float = 0.0  # the backoff before a retry's new process starts
    _recovered_process: bool = False  # the running process was started by a crash recovery
    _failed_turn: bool = False  # the running process's last prompt ended `failed`

    # -- queries ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the shell should send the next ``Tick`` (None: no deadline is armed)."""
        armed = (self._prompt_deadline, self._output_deadline, self._grace_deadline)
        times = [t for t in (*armed, self._retry_at) if t is not None]
        return min(times) if times else None

    def restarts_in_window(self, now: float) -> int:
        return sum(1 for t in self._restarts if now - t < self.policy.restart_window_s)

    # -- helpers ----------------------------------------------------------------------------

    def _restart(
        self, now: float, kind: RestartKind, why: str, delay: float = 0.0
    ) -> list[a.Action]:
        load = self.load_session and self.acp_session_id is not None
        if kind is RestartKind.CRASH:
            delay = self.policy.backoff(self.restarts_in_window(now))
            self._restarts.append(now)
            self._attempt = self._attempt + 1 if self._restart_kind is kind else 1
        else:
            self._attempt = 1
        self._restart_kind = kind
        self._failed_turn = False  # a new process: its state is fresh
        note = f"restarting the agent: {why}"
        if self.state is S.RECOVERING:
            return [a.Restart(delay, load=load, attempt=self._attempt, why=why)]
        return [
            *self._enter(S.RECOVERING, note),
            a.Restart(delay, load=load, attempt=self._attempt, why=why),
        ]

    def _enter(self, state: SessionState, note: str | None = None) -> list[a.Action]:
        self.state = state
        return [a.StateChanged(state, note)]

    def _arm_output_deadline(self, now: float) -> None:
        assert self.policy.no_output_timeout_s is not None
        self._output_deadline = now + self.policy.no_output_timeout_s

    def _clear_deadlines(self) -> None:
        self._prompt_deadline = self._output_deadline = self._grace_deadline = None
        self._retry_at = None

    def _end_prompt(self) -> None:
        self.prompt_id = None
        self._clear_deadlines()
        self._stopping = Stopping.NO
