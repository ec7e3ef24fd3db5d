"""Every state with every event: the next state and the kinds of actions, as a table."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vm_agent.core import actions as a
from vm_agent.core import events as e
from vm_agent.core.classifier import ExitFacts
from vm_agent.core.machine import SessionMachine, SessionPolicy
from vm_agent.core.vocabulary import SessionState as S

POLICY = SessionPolicy(prompt_timeout_s=60, no_output_timeout_s=30, cancel_grace_s=5)
CRASH = ExitFacts(exit_code=1, uptime_s=100.0, in_flight="session/prompt")


def starting() -> SessionMachine:
    return SessionMachine(POLICY)


def ready() -> SessionMachine:
    m = starting()
    m.handle(e.AgentReady(0, "acp-1", load_session=True))
    return m


def prompting() -> SessionMachine:
    m = ready()
    m.handle(e.PromptRequested(1, "p1"))
    return m


def cancelling() -> SessionMachine:
    m = prompting()
    m.handle(e.CancelRequested(2))
    return m


def recovering() -> SessionMachine:
    m = prompting()
    m.handle(e.Disconnected(10, CRASH))
    return m


def error() -> SessionMachine:
    m = starting()
    m.handle(e.StartFailed("boom"))
    return m


def stopped() -> SessionMachine:
    m = ready()
    m.handle(e.StopRequested(3))
    return m


BUILDERS: dict[S, Callable[[], SessionMachine]] = {
    S.STARTING: starting,
    S.READY: ready,
    S.PROMPTING: prompting,
    S.CANCELLING: cancelling,
    S.RECOVERING: recovering,
    S.ERROR: error,
    S.STOPPED: stopped,
}

EVENTS: dict[str, e.Event] = {
    "ready": e.AgentReady(20, "acp-2", load_session=True),
    "start_failed": e.StartFailed("x"),
    "prompt": e.PromptRequested(20, "p2"),
    "output": e.AgentOutput(20),
    "answered": e.PromptAnswered(20, "end_turn"),
    "errored": e.PromptErrored(20, -32000, "auth"),
    "cancel": e.CancelRequested(20),
    "tick": e.Tick(1000),
    "disconnected": e.Disconnected(20, CRASH),
    "recovered": e.RecoverySucceeded(20, "acp-1", loaded=True),
    "recovery_failed": e.RecoveryFailed(20, "died", retryable=True),
    "stop": e.StopRequested(20),
    "recover": e.RecoverRequested(20),
}

Ch, Rf, SP, SC, SA, Rs, RO, CR = (
    a.StateChanged,
    a.Refuse,
    a.SendPrompt,
    a.SendCancel,
    a.StopAgent,
    a.Restart,
    a.RecordOutcome,
    a.EmitCrashReport,
)
_ = None  # no change, no action

# (state, event) -> (next state, action kinds); rows not listed mean: same state, no action.
TABLE: dict[tuple[S, str], tuple[S, list[type]]] = {
    (S.STARTING, "ready"): (S.READY, [Ch]),
    (S.STARTING, "start_failed"): (S.ERROR, [Ch]),
    (S.STARTING, "prompt"): (S.STARTING, [Rf]),
    (S.STARTING, "disconnected"): (S.ERROR, [Ch]),
    (S.STARTING, "stop"): (S.STOPPED, [SA, Ch]),
    (S.STARTING, "recover"): (S.STARTING, [Rf]),
    (S.READY, "prompt"): (S.PROMPTING, [Ch, SP]),
    (S.READY, "disconnected"): (S.RECOVERING, [Ch, Rs]),
    (S.READY, "stop"): (S.STOPPED, [SA, Ch]),
    (S.READY, "recover"): (S.READY, [Rf]),
    (S.PROMPTING, "prompt"): (S.PROMPTING, [Rf]),
    (S.PROMPTING, "answered"): (S.READY, [RO, Ch]),
    (S.PROMPTING, "errored"): (S.READY, [RO, Ch]),
    (S.PROMPTING, "cancel"): (S.CANCELLING, [Ch, SC]),
    (S.PROMPTING, "tick"): (S.PROMPTING, [SA]),
    (S.PROMPTING, "disconnected"): (S.RECOVERING, [Ch, Rs]),
    (S.PROMPTING, "stop"): (S.STOPPED, [RO, SA, Ch]),
    (S.PROMPTING, "recover"): (S.PROMPTING, [Rf]),
    (S.CANCELLING, "prompt"): (S.CANCELLING, [Rf]),
    (S.CANCELLING, "answered"): (S.READY, [RO, Ch]),
    (S.CANCELLING, "errored"): (S.READY, [RO, Ch]),
    (S.CANCELLING, "tick"): (S.CANCELLING, [SA]),
    (S.CANCELLING, "disconnected"): (S.RECOVERING, [RO, Ch, Rs]),
    (S.CANCELLING, "stop"): (S.STOPPED, [RO, SA, Ch]),
    (S.CANCELLING, "recover"): (S.CANCELLING, [Rf]),
    (S.RECOVERING, "prompt"): (S.RECOVERING, [Rf]),
    (S.RECOVERING, "cancel"): (S.RECOVERING, [RO]),
    (S.RECOVERING, "disconnected"): (S.RECOVERING, [Rs]),
    (S.RECOVERING, "recovered"): (S.READY, [RO, CR, Ch]),
    (S.RECOVERING, "recovery_failed"): (S.RECOVERING, [Rs]),
    (S.RECOVERING, "stop"): (S.STOPPED, [RO, CR, SA, Ch]),
    (S.RECOVERING, "recover"): (S.RECOVERING, [Rf]),
    (S.ERROR, "prompt"): (S.ERROR, [Rf]),
    (S.ERROR, "stop"): (S.STOPPED, [SA, Ch]),
    (S.ERROR, "recover"): (S.ERROR, [Rf]),  # a start failure has no ACP session to load
    (S.STOPPED, "prompt"): (S.STOPPED, [Rf]),
    (S.STOPPED, "recover"): (S.RECOVERING, [Ch, Rs]),
}


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("event_name", list(EVENTS))
def test_every_state_with_every_event(state: S, event_name: str) -> None:
    m = BUILDERS[state]()
    assert m.state is state
    expected_state, expected_kinds = TABLE.get((state, event_name), (state, []))
    actions = m.handle(EVENTS[event_name])
    assert [type(x) for x in actions] == expected_kinds
    assert m.state is expected_state
