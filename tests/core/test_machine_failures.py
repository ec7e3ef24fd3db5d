"""Start and recovery failures: what each means as an outcome, as a table."""

from __future__ import annotations

import pytest

from vm_agent.core import actions as a
from vm_agent.core import events as e
from vm_agent.core.classifier import ExitFacts
from vm_agent.core.machine import SessionMachine
from vm_agent.core.vocabulary import OutcomeKind as O
from vm_agent.core.vocabulary import SessionState as S

CRASH = ExitFacts(exit_code=1, uptime_s=100.0, in_flight="session/prompt")


@pytest.mark.parametrize(
    ("failure", "outcome", "code", "note"),
    [
        (
            e.StartFailed("the agent refused session/new: Authentication required", -32000),
            O.AUTH_REQUIRED,
            -32000,
            "the agent needs authentication: the agent refused session/new",
        ),
        (
            e.StartFailed("the agent did not answer session/new within 5s", timed_out=True),
            O.TIMEOUT,
            None,
            "the agent did not answer session/new within 5s",
        ),
        (
            e.StartFailed("the agent refused session/new: internal (JSON-RPC -32603)", -32603),
            O.FAILED,
            -32603,
            "the agent refused session/new",
        ),
        (e.StartFailed("the agent exited with code 7 during initialize"), O.FAILED, None, "the"),
    ],
)
def test_a_start_failure_says_what_it_means(
    failure: e.StartFailed, outcome: O, code: int | None, note: str
) -> None:
    m = SessionMachine()
    out = m.handle(failure)
    assert m.state is S.ERROR
    assert (m.error_outcome, m.error_code) == (outcome, code)
    (changed,) = out
    assert isinstance(changed, a.StateChanged) and (changed.note or "").startswith(note)
    assert m.error == failure.message


def _recovering_with_a_prompt() -> SessionMachine:
    m = SessionMachine()
    m.handle(e.AgentReady(0, "acp-1", load_session=True))
    m.handle(e.PromptRequested(1, "p1"))
    m.handle(e.Disconnected(10, CRASH))
    assert m.state is S.RECOVERING
    return m


@pytest.mark.parametrize("retryable", [False, True])
def test_load_refused_for_authentication_ends_the_prompt_auth_required(retryable: bool) -> None:
    m = _recovering_with_a_prompt()
    out = m.handle(
        e.RecoveryFailed(11, "the agent refused session/load: Auth", retryable, error_code=-32000)
    )
    assert [type(x) for x in out] == [a.RecordOutcome, a.EmitCrashReport, a.StateChanged]
    outcome = out[0]
    assert isinstance(outcome, a.RecordOutcome)
    assert (outcome.prompt_id, outcome.outcome, outcome.error_code) == (
        "p1",
        O.AUTH_REQUIRED,
        -32000,
    )
    assert "budget" not in (outcome.reason or "")  # never retried: it would ask again
    assert (m.state, m.error_outcome) == (S.ERROR, O.AUTH_REQUIRED)


def test_a_load_past_the_start_deadline_is_retried_then_crashes() -> None:
    m = _recovering_with_a_prompt()
    late = "the agent did not answer session/load within 5s"
    restarts = 0
    while True:
        out = m.handle(e.RecoveryFailed(11 + restarts, late, True, timed_out=True))
        if not (out and isinstance(out[-1], a.Restart)):
            break
        restarts += 1
    assert restarts == 2  # with the first recovery, the budget of 3
    kinds = [x.outcome for x in out if isinstance(x, a.RecordOutcome)]
    assert kinds == [O.CRASHED]
    assert (m.state, m.error_outcome) == (S.ERROR, O.TIMEOUT)


def test_a_recovery_that_succeeds_clears_the_error_outcome() -> None:
    m = _recovering_with_a_prompt()
    m.handle(e.RecoveryFailed(11, "refused", False, error_code=-32000))
    assert m.error_outcome is O.AUTH_REQUIRED
    m.handle(e.RecoverRequested(12))
    assert m.error_outcome is None and m.error_code is None
    m.handle(e.RecoverySucceeded(13, "acp-1", loaded=True))
    assert (m.state, m.error, m.error_outcome) == (S.READY, None, None)
