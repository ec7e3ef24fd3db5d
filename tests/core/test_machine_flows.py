"""Whole flows through the machine, including the unlikely orders."""

from __future__ import annotations

import random
from collections.abc import Callable

from vm_agent.core import actions as a
from vm_agent.core import events as e
from vm_agent.core.classifier import ExitFacts
from vm_agent.core.machine import SessionMachine, SessionPolicy
from vm_agent.core.vocabulary import DisconnectClass as D
from vm_agent.core.vocabulary import OutcomeKind as O
from vm_agent.core.vocabulary import SessionState as S

CRASH = ExitFacts(exit_code=1, uptime_s=100.0, in_flight="session/prompt")


def ready(policy: SessionPolicy | None = None, load: bool = True) -> SessionMachine:
    m = SessionMachine(policy or SessionPolicy())
    m.handle(e.AgentReady(0, "acp-1", load_session=load))
    return m


def outcomes(actions: list[a.Action]) -> list[a.RecordOutcome]:
    return [x for x in actions if isinstance(x, a.RecordOutcome)]


def test_completed() -> None:
    m = ready()
    m.handle(e.PromptRequested(1, "p1"))
    out = m.handle(e.PromptAnswered(2, "max_tokens"))
    assert outcomes(out) == [a.RecordOutcome("p1", O.COMPLETED, stop_reason="max_tokens")]
    assert m.state is S.READY and m.prompt_id is None


def test_crash_mid_prompt_is_recovered_with_a_crash_report() -> None:
    m = ready()
    m.handle(e.PromptRequested(1, "p1"))
    out = m.handle(e.Disconnected(10, CRASH))
    restart = out[-1]
    assert isinstance(restart, a.Restart)
    assert (restart.delay_s, restart.load, restart.attempt) == (0.0, True, 1)
    out = m.handle(e.RecoverySucceeded(11, "acp-1", loaded=True))
    assert outcomes(out)[0].outcome is O.RECOVERED
    report = next(x for x in out if isinstance(x, a.EmitCrashReport))
    assert report.recovered and report.classification.kind is D.RESUMABLE
    assert report.exit == CRASH
    assert m.state is S.READY


def test_restart_budget_and_backoff() -> None:
    m = ready(SessionPolicy(restart_budget=3, restart_window_s=300, backoff_base_s=0.5))
    delays = []
    for i in range(3):
        m.handle(e.PromptRequested(10 * i, f"p{i}"))
        restart = m.handle(e.Disconnected(10 * i + 1, CRASH))[-1]
        assert isinstance(restart, a.Restart)
        delays.append(restart.delay_s)
        m.handle(e.RecoverySucceeded(10 * i + 2, "acp-1", loaded=True))
    assert delays == [0.0, 0.5, 1.0]
    m.handle(e.PromptRequested(50, "p3"))
    out = m.handle(e.Disconnected(51, CRASH))
    assert outcomes(out) == [a.RecordOutcome("p3", O.CRASHED, reason=outcomes(out)[0].reason)]
    assert "budget" in (outcomes(out)[0].reason or "")
    assert m.state is S.ERROR
    # outside the window the budget is whole again
    m2 = ready(SessionPolicy(restart_budget=1, restart_window_s=60))
    m2.handle(e.PromptRequested(0, "a"))
    m2.handle(e.Disconnected(1, CRASH))
    m2.handle(e.RecoverySucceeded(2, "acp-1", loaded=True))
    m2.handle(e.PromptRequested(100, "b"))
    assert isinstance(m2.handle(e.Disconnected(101, CRASH))[-1], a.Restart)


def test_recovery_failing_each_time_spends_the_budget_then_crashes() -> None:
    m = ready(SessionPolicy(restart_budget=3))
    m.handle(e.PromptRequested(1, "p1"))
    m.handle(e.Disconnected(10, CRASH))
    attempts = 1
    while True:
        out = m.handle(
            e.RecoveryFailed(11 + attempts, "exited with code 3 during session/load", True)
        )
        if not out or not isinstance(out[-1], a.Restart):
            break
        attempts += 1
    assert attempts == 3
    assert m.state is S.ERROR
    (crashed,) = outcomes(out)
    assert crashed.outcome is O.CRASHED
    report = next(x for x in out if isinstance(x, a.EmitCrashReport))
    assert not report.recovered
    assert report.recovery_error == "exited with code 3 during session/load"
    assert "budget of 3 spent" in (crashed.reason or "")


def test_recovery_refused_by_the_agent_is_not_retried() -> None:
    m = ready()
    m.handle(e.PromptRequested(1, "p1"))
    m.handle(e.Disconnected(10, CRASH))
    out = m.handle(e.RecoveryFailed(11, "session not found (-32002)", retryable=False))
    assert [type(x) for x in out] == [a.RecordOutcome, a.EmitCrashReport, a.StateChanged]
    assert m.state is S.ERROR


def test_agent_without_load_session_crashes() -> None:
    m = ready(load=False)
    m.handle(e.PromptRequested(1, "p1"))
    out = m.handle(e.Disconnected(10, CRASH))
    assert outcomes(out)[0].outcome is O.CRASHED
    assert "does not support session/load" in (outcomes(out)[0].reason or "")
    assert m.state is S.ERROR
    assert m.handle(e.PromptRequested(11, "p2")) == [
        a.Refuse(f"the session is in error: {m.error}")
    ]


def test_death_right_after_a_recovery_is_a_crash_but_not_after_a_first_start() -> None:
    m = ready()
    m.handle(e.PromptRequested(1, "p1"))
    out = m.handle(e.Disconnected(2, ExitFacts(exit_code=1, uptime_s=0.4)))
    assert isinstance(out[-1], a.Restart)  # a first process: quick prompt, quick crash
    m.handle(e.RecoverySucceeded(3, "acp-1", loaded=True))
    m.handle(e.PromptRequested(4, "p2"))
    out = m.handle(e.Disconnected(5, ExitFacts(exit_code=1, uptime_s=0.4)))
    assert outcomes(out)[0].outcome is O.CRASHED
    assert "of being recovered" in (outcomes(out)[0].reason or "")


def test_timeout_ignores_a_late_answer_and_restarts() -> None:
    m = ready(SessionPolicy(prompt_timeout_s=30))
    m.handle(e.PromptRequested(0, "p1"))
    assert m.next_deadline() == 30
    assert m.handle(e.Tick(29)) == []
    assert m.handle(e.Tick(30)) == [a.StopAgent("the prompt deadline passed")]
    assert m.handle(e.Tick(31)) == []  # stop already asked for
    assert m.handle(e.PromptAnswered(31, "end_turn")) == []  # an answer after the deadline
    out = m.handle(e.Disconnected(32, ExitFacts(signal=15, uptime_s=40)))
    assert outcomes(out)[0].outcome is O.TIMEOUT
    restart = out[-1]
    assert isinstance(restart, a.Restart) and restart.load and restart.delay_s == 0
    out = m.handle(e.RecoverySucceeded(33, "acp-1", loaded=True))
    assert outcomes(out) == []
    assert not any(isinstance(x, a.EmitCrashReport) for x in out)
    assert m.state is S.READY
    assert m.restarts_in_window(33) == 0  # a deliberate restart does not spend the budget


def test_output_pushes_the_no_output_deadline() -> None:
    m = ready(SessionPolicy(no_output_timeout_s=10))
    m.handle(e.PromptRequested(0, "p1"))
    m.handle(e.AgentOutput(8))
    assert m.next_deadline() == 18
    assert m.handle(e.Tick(12)) == []
    assert isinstance(m.handle(e.Tick(18))[0], a.StopAgent)


def test_cancel_honoured() -> None:
    m = ready()
    m.handle(e.PromptRequested(0, "p1"))
    assert m.handle(e.CancelRequested(1)) == [a.StateChanged(S.CANCELLING, None), a.SendCancel()]
    assert m.next_deadline() == 6
    out = m.handle(e.PromptAnswered(2, "cancelled"))
    assert outcomes(out)[0].outcome is O.CANCELLED
    assert m.state is S.READY and m.next_deadline() is None


def test_cancel_answered_with_request_cancelled_error() -> None:
    m = ready()
    m.handle(e.PromptRequested(0, "p1"))
    m.handle(e.CancelRequested(1))
    out = m.handle(e.PromptErrored(2, -32800, "cancelled"))
    assert outcomes(out)[0].outcome is O.CANCELLED


def test_cancel_ignored_then_forced_stop_then_new_session() -> None:
    m = ready(load=False)
    m.handle(e.PromptRequested(0, "p1"))
    m.handle(e.CancelRequested(1))
    assert m.handle(e.Tick(6)) == [
        a.StopAgent("the agent did not answer the cancel within the grace period")
    ]
    out = m.handle(e.Disconnected(7, ExitFacts(signal=9, uptime_s=50)))
    assert outcomes(out)[0].outcome is O.CANCELLED
    restart = out[-1]
    assert isinstance(restart, a.Restart) and not restart.load
    out = m.handle(e.RecoverySucceeded(8, "acp-2", loaded=False))
    assert out == [
        a.StateChanged(
            S.READY, "a new agent process opened a new ACP session (the agent cannot load sessions)"
        )
    ]
    assert m.acp_session_id == "acp-2"


def test_auth_required_and_failed_keep_the_session_up() -> None:
    m = ready()
    m.handle(e.PromptRequested(0, "p1"))
    out = m.handle(e.PromptErrored(1, -32000, "Authentication required"))
    assert outcomes(out)[0].outcome is O.AUTH_REQUIRED
    assert out[-1] == a.StateChanged(S.READY, "the agent needs authentication")
    m.handle(e.PromptRequested(2, "p2"))
    out = m.handle(e.PromptErrored(3, -32603, "Internal error"))
    assert outcomes(out)[0] == a.RecordOutcome(
        "p2", O.FAILED, reason="Internal error", error_code=-32603
    )


def test_cancel_during_recovery_ends_the_prompt_once() -> None:
    m = ready()
    m.handle(e.PromptRequested(0, "p1"))
    m.handle(e.Disconnected(10, CRASH))
    assert outcomes(m.handle(e.CancelRequested(11)))[0].outcome is O.CANCELLED
    out = m.handle(e.RecoverySucceeded(12, "acp-1", loaded=True))
    assert outcomes(out) == []
    assert any(isinstance(x, a.EmitCrashReport) and x.recovered for x in out)


def test_exit_during_recovery_retries_within_budget() -> None:
    m = ready()
    m.handle(e.PromptRequested(0, "p1"))
    m.handle(e.Disconnected(10, CRASH))
    out = m.handle(
        e.Disconnected(11, ExitFacts(exit_code=3, uptime_s=0.2, in_flight="session/load"))
    )
    assert isinstance(out[-1], a.Restart) and out[-1].attempt == 2


def test_stop_during_prompt_cancels_it_and_ignores_the_exit() -> None:
    m = ready()
    m.handle(e.PromptRequested(0, "p1"))
    out = m.handle(e.StopRequested(1))
    assert outcomes(out)[0] == a.RecordOutcome("p1", O.CANCELLED, reason="the session was stopped")
    assert m.handle(e.Disconnected(2, ExitFacts(signal=15, uptime_s=5))) == []
    assert m.state is S.STOPPED


def test_recover_after_stop_loads_the_session() -> None:
    m = ready()
    m.handle(e.StopRequested(1))
    out = m.handle(e.RecoverRequested(2))
    assert isinstance(out[-1], a.Restart) and out[-1].load
    assert m.handle(e.RecoverySucceeded(3, "acp-1", loaded=True))[-1].state is S.READY  # type: ignore[union-attr]


def test_random_walk_every_prompt_ends_in_exactly_one_outcome() -> None:
    rng = random.Random(20261124)
    makers: list[Callable[[float], e.Event]] = [
        lambda t: e.AgentReady(t, "acp", load_session=rng.random() < 0.8),
        lambda t: e.StartFailed("no"),
        lambda t: e.PromptRequested(t, f"p{t}"),
        e.AgentOutput,
        lambda t: e.PromptAnswered(t, rng.choice(["end_turn", "cancelled", "refusal"])),
        lambda t: e.PromptErrored(t, rng.choice([-32000, -32603, -32800]), "err"),
        # a transient provider error (issue 25): retried, sometimes after a tool
        lambda t: e.PromptErrored(t, 529, "overloaded", tool_started=rng.random() < 0.3),
        e.CancelRequested,
        e.Tick,
        lambda t: e.Disconnected(t, ExitFacts(exit_code=1, uptime_s=rng.choice([0.5, 50.0]))),
        lambda t: e.RecoverySucceeded(t, "acp", loaded=rng.random() < 0.5),
        lambda t: e.RecoveryFailed(t, "x", retryable=rng.random() < 0.5),
        e.StopRequested,
        e.RecoverRequested,
    ]
    for _walk in range(200):
        m = SessionMachine(
            SessionPolicy(prompt_timeout_s=50, no_output_timeout_s=20, cancel_grace_s=3)
        )
        accepted: list[str] = []
        ended: list[str] = []
        for t in range(1, 80):
            event = rng.choice(makers)(float(t * 7))
            out = m.handle(event)
            for act in out:
                if isinstance(act, a.SendPrompt):
                    accepted.append(act.prompt_id)
                if isinstance(act, a.RecordOutcome):
                    ended.append(act.prompt_id)
        assert len(ended) == len(set(ended)), "a prompt got two outcomes"
        assert set(ended) <= set(accepted)
        open_prompts = set(accepted) - set(ended)
        assert len(open_prompts) <= 1
        if m.state in (S.READY, S.ERROR, S.STOPPED, S.STARTING):
            assert not open_prompts, f"prompt left without outcome in {m.state}"
