"""A failed turn's process is not used again: claude-agent-acp 0.23.1 answers the next
prompt sent to the process of a turn that ended in an error at once, with that turn's stale
end and no text, without asking the model. So when an agent can resume its session, the
prompt after a `failed` one goes to a new process that resumes the session (as a retry's
does: no crash, no restart budget spent); an agent that cannot resume keeps its process."""

from __future__ import annotations

from vm_agent.core import actions as a
from vm_agent.core import events as e
from vm_agent.core.classifier import ExitFacts
from vm_agent.core.machine import SessionMachine
from vm_agent.core.vocabulary import OutcomeKind as O
from vm_agent.core.vocabulary import SessionState as S

BAD_REQUEST = 'Internal error: API Error: 400 {"type":"error","error":{"type":"api_error"}}'
FRESH = a.StopAgent("a new agent process for the prompt after a failed turn")
GONE = ExitFacts(exit_code=None, signal=15, uptime_s=9.0)


def after_a_failed_turn(*, resume: bool = True) -> SessionMachine:
    m = SessionMachine()
    m.handle(e.AgentReady(0, "acp-1", load_session=resume, resume=resume))
    m.handle(e.PromptRequested(1, "p1"))
    end = m.handle(e.PromptErrored(2, -32603, BAD_REQUEST))
    assert end[0] == a.RecordOutcome("p1", O.FAILED, reason=BAD_REQUEST, error_code=-32603)
    assert m.state is S.READY
    return m


def test_the_next_prompt_goes_to_a_new_process_that_resumes_the_session() -> None:
    m = after_a_failed_turn()
    out = m.handle(e.PromptRequested(3, "p2"))
    # started for the viewers now, sent only once the new process is up
    assert out == [a.StateChanged(S.PROMPTING), a.SendPrompt("p2", send=False), FRESH]
    out = m.handle(e.Disconnected(4, GONE))
    assert isinstance(out[-1], a.Restart) and out[-1].load and out[-1].delay_s == 0.0
    assert m.state is S.RECOVERING and m.prompt_id == "p2"
    out = m.handle(e.RecoverySucceeded(5, "acp-1", loaded=True))
    assert out == [
        a.StateChanged(S.PROMPTING, "a new agent process loaded the session; the prompt goes"),
        a.ResendPrompt("p2", 1),
    ]
    assert m.restarts_in_window(5) == 0  # not a crash
    out = m.handle(e.PromptAnswered(6, "end_turn"))
    assert out[0] == a.RecordOutcome("p2", O.COMPLETED, stop_reason="end_turn")
    # that process's turn went well: the next prompt stays in it
    assert m.handle(e.PromptRequested(7, "p3"))[-1] == a.SendPrompt("p3")


def test_without_resume_the_process_stays() -> None:
    m = after_a_failed_turn(resume=False)
    assert m.handle(e.PromptRequested(3, "p2")) == [
        a.StateChanged(S.PROMPTING),
        a.SendPrompt("p2"),
    ]


def test_a_process_made_since_the_failure_is_used() -> None:
    m = after_a_failed_turn()
    m.handle(e.Disconnected(3, ExitFacts(exit_code=1, uptime_s=100.0)))  # a crash: recovered
    m.handle(e.RecoverySucceeded(4, "acp-1", loaded=True))
    assert m.state is S.READY
    assert m.handle(e.PromptRequested(5, "p2"))[-1] == a.SendPrompt("p2")


def test_a_cancel_before_the_new_process_ends_the_prompt_and_keeps_the_process() -> None:
    m = after_a_failed_turn()
    m.handle(e.PromptRequested(3, "p2"))
    out = m.handle(e.CancelRequested(4))
    assert [x.outcome for x in out if isinstance(x, a.RecordOutcome)] == [O.CANCELLED]
    m.handle(e.Disconnected(5, GONE))
    out = m.handle(e.RecoverySucceeded(6, "acp-1", loaded=True))
    assert m.state is S.READY and not any(isinstance(x, a.ResendPrompt) for x in out)


def test_the_new_process_not_coming_up_fails_the_prompt_with_why() -> None:
    m = after_a_failed_turn()
    m.handle(e.PromptRequested(3, "p2"))
    m.handle(e.Disconnected(4, GONE))
    out = m.handle(e.RecoveryFailed(5, "load refused", retryable=False))
    (end,) = [x for x in out if isinstance(x, a.RecordOutcome)]
    assert end.prompt_id == "p2" and end.outcome is O.FAILED
    assert "load refused" in (end.reason or "")
