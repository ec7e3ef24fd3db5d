"""Issue 25 in the machine: a transient provider error sends the prompt again after a
backoff, under the same prompt id, until the attempts are spent; never after a tool; a
cancel or a stop during the backoff ends it. An agent that can load sessions gets the
prompt again in a new process (no crash, no restart budget spent); one that cannot, in the
same process, where a disconnect during the backoff is a crash, not a retry. An answer cut
mid-stream, as an agent that declares the signal reports one, is sent again the same way."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vm_agent.core import actions as a
from vm_agent.core import events as e
from vm_agent.core.classifier import ExitFacts
from vm_agent.core.machine import SessionMachine, SessionPolicy
from vm_agent.core.provider_errors import RetryPolicy
from vm_agent.core.vocabulary import OutcomeKind as O
from vm_agent.core.vocabulary import SessionState as S

OVERLOADED = (
    'Internal error: API Error: 529 {"type":"error","error":{"type":"overloaded_error",'
    '"message":"Overloaded"}}'
)
POLICY = SessionPolicy(retry=RetryPolicy(attempts=3, base_s=2.0, max_s=60.0))


def prompting(policy: SessionPolicy = POLICY, *, load: bool = False) -> SessionMachine:
    m = SessionMachine(policy)
    m.handle(e.AgentReady(0, "acp-1", load_session=load, resume=load))
    m.handle(e.PromptRequested(1, "p1"))
    return m


def overloaded(now: float, **kw: object) -> e.PromptErrored:
    return e.PromptErrored(now, -32603, OVERLOADED, **kw)  # type: ignore[arg-type]


CUTTING = SessionPolicy(retry=POLICY.retry, empty_usage_means_cut=True)
CUT = "model answer cut off mid-stream (the agent ended the turn with no tokens counted)"


def cut(now: float, **kw: object) -> e.PromptAnswered:
    """claude-agent-acp 0.23.1's answer to a turn whose stream the provider cut: text
    shown, Claude Code's fallback request billed, no token counted (docs/agents.md)."""
    facts = {"streamed_text": True, "input_tokens": 0, "output_tokens": 0, "cost_rose": True}
    return e.PromptAnswered(now, "end_turn", **(facts | kw))  # type: ignore[arg-type]


Failure = Callable[..., e.PromptErrored | e.PromptAnswered]


def test_a_529_then_success_is_one_retry_and_one_outcome() -> None:
    m = prompting()
    out = m.handle(overloaded(2))
    assert out == [
        a.RetryPrompt("p1", 2, 2.0, "model provider overloaded (529)", -32603, OVERLOADED)
    ]
    assert m.state is S.PROMPTING and m.prompt_id == "p1"
    assert m.next_deadline() == 4.0
    assert m.handle(e.Tick(3.9)) == []
    assert m.handle(e.Tick(4.0)) == [a.ResendPrompt("p1", 2)]
    assert m.next_deadline() is None
    out = m.handle(e.PromptAnswered(5, "end_turn"))
    assert out[0] == a.RecordOutcome("p1", O.COMPLETED, stop_reason="end_turn")
    assert out[-1] == a.StateChanged(S.READY)


ERROR_END = f"model provider overloaded (529) after 3 attempts: {OVERLOADED}"


@pytest.mark.parametrize(
    ("policy", "fail", "end"),
    [
        (POLICY, overloaded, a.RecordOutcome("p1", O.FAILED, reason=ERROR_END, error_code=-32603)),
        # a cut answer was no error: no code
        (CUTTING, cut, a.RecordOutcome("p1", O.FAILED, reason=f"{CUT} after 3 attempts")),
    ],
    ids=["error", "cut"],
)
def test_attempts_spent_end_failed_with_the_reason(
    policy: SessionPolicy, fail: Failure, end: a.RecordOutcome
) -> None:
    m = prompting(policy)
    now = 2.0
    for attempt in (2, 3):
        (retry,) = m.handle(fail(now))
        assert isinstance(retry, a.RetryPrompt) and retry.attempt == attempt
        now += retry.delay_s
        assert m.handle(e.Tick(now)) == [a.ResendPrompt("p1", attempt)]
    out = m.handle(fail(now))
    assert out[0] == end and m.state is S.READY
    # the next prompt starts counting again
    m.handle(e.PromptRequested(now + 1, "p2"))
    assert isinstance(m.handle(fail(now + 2))[0], a.RetryPrompt)


@pytest.mark.parametrize(
    ("policy", "fail"), [(POLICY, overloaded), (CUTTING, cut)], ids=["error", "cut"]
)
def test_no_retry_after_a_tool(policy: SessionPolicy, fail: Failure) -> None:
    m = prompting(policy)
    end = m.handle(fail(2, tool_started=True))[0]
    assert isinstance(end, a.RecordOutcome) and end.outcome is O.FAILED
    assert "after the agent started a tool" in (end.reason or "")


def test_a_cut_answer_is_completed_while_cancelling_or_for_an_agent_without_the_signal() -> None:
    completed = a.RecordOutcome("p1", O.COMPLETED, stop_reason="end_turn")
    m = prompting(CUTTING)
    m.handle(e.CancelRequested(2))  # a cancel pending: no retry, as for an error
    assert m.handle(cut(3))[0] == completed
    assert prompting().handle(cut(2))[0] == completed


def test_other_errors_fail_at_once_and_codex_s_detail_is_kept() -> None:
    m = prompting()
    data = {"message": "stream disconnected", "codex_error_info": "other"}
    end = m.handle(e.PromptErrored(2, -32603, "Internal error", data))[0]
    assert end == a.RecordOutcome(
        "p1", O.FAILED, reason="Internal error: stream disconnected", error_code=-32603
    )


def test_cancel_during_the_backoff_cancels_at_once() -> None:
    m = prompting()
    m.handle(overloaded(2))
    out = m.handle(e.CancelRequested(3))
    assert out[0] == a.RecordOutcome(
        "p1", O.CANCELLED, reason="cancelled while waiting to send the prompt again"
    )
    assert not any(isinstance(x, a.SendCancel) for x in out)
    assert m.state is S.READY and m.next_deadline() is None
    assert m.handle(e.Tick(100)) == []


def test_a_cancel_in_flight_is_not_retried() -> None:
    m = prompting()
    m.handle(e.CancelRequested(2))
    end = m.handle(overloaded(3))[0]
    assert isinstance(end, a.RecordOutcome) and end.outcome is O.FAILED


def test_stop_during_the_backoff() -> None:
    m = prompting()
    m.handle(overloaded(2))
    out = m.handle(e.StopRequested(3))
    assert out[0] == a.RecordOutcome("p1", O.CANCELLED, reason="the session was stopped")
    assert m.handle(e.Tick(100)) == []


def test_a_disconnect_during_the_backoff_is_recovery_not_a_retry() -> None:
    m = prompting(load=True)
    m.resume_session = False  # load only: the retry stays in this process
    m.handle(overloaded(2))
    m.handle(overloaded(2))
    out = m.handle(e.Disconnected(3, ExitFacts(exit_code=1, uptime_s=100.0)))
    assert isinstance(out[-1], a.Restart)
    assert m.next_deadline() is None  # the retry is forgotten
    out = m.handle(e.RecoverySucceeded(4, "acp-1", loaded=True))
    assert [x.outcome for x in out if isinstance(x, a.RecordOutcome)] == [O.RECOVERED]
    assert m.handle(e.Tick(100)) == []


def test_the_prompt_deadline_runs_through_the_backoff() -> None:
    m = prompting(SessionPolicy(prompt_timeout_s=5, retry=RetryPolicy(base_s=10, max_s=60)))
    m.handle(overloaded(2))
    assert m.next_deadline() == 6.0
    assert m.handle(e.Tick(6.0)) == [a.StopAgent("the prompt deadline passed")]


def test_no_output_deadline_sleeps_during_the_backoff() -> None:
    m = prompting(SessionPolicy(no_output_timeout_s=3, retry=RetryPolicy(base_s=10, max_s=60)))
    m.handle(overloaded(2))
    m.handle(e.AgentOutput(2.5))  # a late update of the failed attempt
    assert m.next_deadline() == 12.0
    assert m.handle(e.Tick(12.0)) == [a.ResendPrompt("p1", 2)]
    assert m.next_deadline() == 15.0  # armed again with the new send


RETRY = a.RetryPrompt("p1", 2, 2.0, "model provider overloaded (529)", -32603, OVERLOADED)
STOP = a.StopAgent("sending the prompt again in a new agent process")


def test_a_loading_agent_gets_the_retry_in_a_new_process() -> None:
    m = prompting(load=True)
    assert m.handle(overloaded(2)) == [RETRY, STOP]
    assert m.handle(e.Tick(100)) == []  # nothing more until the process is gone
    out = m.handle(e.Disconnected(3, ExitFacts(exit_code=None, signal=15, uptime_s=9.0)))
    assert out[-1] == a.Restart(2.0, load=True, attempt=1, why=out[-1].why)  # type: ignore[union-attr]
    assert m.state is S.RECOVERING and m.prompt_id == "p1"
    out = m.handle(e.RecoverySucceeded(6, "acp-1", loaded=True))
    assert out[-2:] == [
        a.StateChanged(
            S.PROMPTING, "a new agent process loaded the session; the prompt goes again"
        ),
        a.ResendPrompt("p1", 2),
    ]
    assert m.restarts_in_window(6) == 0
    out = m.handle(e.PromptAnswered(7, "end_turn"))
    assert out[0] == a.RecordOutcome("p1", O.COMPLETED, stop_reason="end_turn")
    assert not any(isinstance(x, a.EmitCrashReport) for x in out)


def test_a_cut_answer_of_a_resuming_agent_goes_again_in_a_new_process() -> None:
    m = prompting(CUTTING, load=True)
    assert m.handle(cut(2)) == [a.RetryPrompt("p1", 2, 2.0, CUT, None, ""), STOP]
    m.handle(e.Disconnected(3, ExitFacts(exit_code=None, signal=15, uptime_s=9.0)))
    assert m.handle(e.RecoverySucceeded(6, "acp-1", loaded=True))[-1] == a.ResendPrompt("p1", 2)
    whole = e.PromptAnswered(7, "end_turn", True, 12, 5, cost_rose=True)  # the same stand-in
    assert m.handle(whole)[0] == a.RecordOutcome("p1", O.COMPLETED, stop_reason="end_turn")


def test_a_cancel_while_the_retry_s_process_goes() -> None:
    m = prompting(load=True)
    m.handle(overloaded(2))
    out = m.handle(e.CancelRequested(2.5))
    assert out == [
        a.RecordOutcome(
            "p1", O.CANCELLED, reason="cancelled while waiting to send the prompt again"
        )
    ]
    m.handle(e.Disconnected(3, ExitFacts(exit_code=None, signal=15, uptime_s=9.0)))
    out = m.handle(e.RecoverySucceeded(6, "acp-1", loaded=True))
    assert m.state is S.READY and not any(isinstance(x, a.ResendPrompt) for x in out)


def test_a_cancel_while_the_retry_s_process_starts() -> None:
    m = prompting(load=True)
    m.handle(overloaded(2))
    m.handle(e.Disconnected(3, ExitFacts(exit_code=None, signal=15, uptime_s=9.0)))
    (end,) = m.handle(e.CancelRequested(4))
    assert isinstance(end, a.RecordOutcome) and end.outcome is O.CANCELLED
    m.handle(e.RecoverySucceeded(6, "acp-1", loaded=True))
    assert m.state is S.READY


def test_the_retry_s_process_fails_to_start() -> None:
    m = prompting(load=True)
    m.handle(overloaded(2))
    m.handle(e.Disconnected(3, ExitFacts(exit_code=None, signal=15, uptime_s=9.0)))
    out = m.handle(e.RecoveryFailed(4, "exited with code 1", retryable=True))
    end = out[0]
    assert isinstance(end, a.RecordOutcome) and end.outcome is O.FAILED
    assert (end.reason or "").startswith("the prompt could not be sent again")
    assert m.state is S.ERROR
