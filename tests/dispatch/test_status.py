"""A task's status: every status with every fact, as a table; then the flags and outcomes."""

from __future__ import annotations

import pytest

from control_plane.dispatch import status as st
from control_plane.dispatch.status import Status as S
from control_plane.dispatch.status import TaskState

METHODS = ({"id": "api-key", "name": "API key"},)

FACTS: dict[str, st.Fact] = {
    "placed": st.Placed("n1"),
    "node_ready": st.NodeReady(),
    "session_started": st.SessionStarted(),
    "start_failed": st.SessionStartFailed("cwd refused"),
    "prompt_sent": st.PromptSent("p1"),
    "update": st.AgentUpdate(),
    "end_turn": st.PromptFinished("p1", "completed", stop_reason="end_turn"),
    "prompt_cancelled": st.PromptFinished("p1", "cancelled"),
    "prompt_timeout": st.PromptFinished("p1", "timeout", reason="no output"),
    "prompt_crashed": st.PromptFinished("p1", "crashed", reason="exit 1"),
    "prompt_auth": st.PromptFinished("p1", "auth_required", auth_methods=METHODS),
    "prompt_failed": st.PromptFinished("p1", "failed", error_code=-32603),
    "prompt_recovered": st.PromptFinished("p1", "recovered"),
    "permission_asked": st.PermissionAsked("perm-1"),
    "permission_answered": st.PermissionAnswered("perm-1"),
    "crashed": st.Crashed("exit 1, not recoverable"),
    "auth_required": st.AuthRequired(METHODS, "session/new refused"),
    "cancel": st.CancelAsked(),
    "follow_up": st.FollowUpAsked("p2"),
    "close": st.CloseAsked(),
    "node_silent": st.NodeSilent("n1", 300.0),
    "delivered": st.Delivered(pushed=True),
    "delivery_failed": st.DeliveryFailed("the push failed: rejected"),
}

# "=": nothing changes; "409": a user's ask refused; "cancel": the flag is set, status stays.
_ = "="
R = "409"
ROWS: dict[S, dict[str, str]] = {
    S.QUEUED: {"placed": "waiting_for_node", "cancel": "cancelled", "follow_up": R, "close": R},
    S.WAITING_FOR_NODE: {
        "node_ready": "starting",
        "cancel": "cancelled",
        "follow_up": R,
        "close": R,
        "node_silent": "timed_out",
    },
    S.STARTING: {
        "start_failed": "failed",
        "prompt_sent": "running",
        "crashed": "crashed",
        "auth_required": "auth_required",
        "cancel": "cancelled",
        "follow_up": R,
        "close": R,
        "node_silent": "timed_out",
    },
    S.RUNNING: {
        "end_turn": "completed",
        "prompt_cancelled": "cancelled",
        "prompt_timeout": "timed_out",
        "prompt_crashed": "crashed",
        "prompt_auth": "auth_required",
        "prompt_failed": "failed",
        "prompt_recovered": "failed",
        "crashed": "crashed",
        "auth_required": "auth_required",
        "cancel": "cancel",
        "follow_up": R,
        "close": R,
        "node_silent": "timed_out",
    },
    S.AWAITING_FOLLOW_UP: {
        "crashed": "crashed",
        "cancel": "cancelled",
        "follow_up": "running",
        "close": "completed",
        "node_silent": "timed_out",
    },
    # a task with a repository whose work is done, while its branch is pushed
    S.DELIVERING: {
        "delivered": "completed",
        "delivery_failed": "failed",
        "cancel": "cancelled",
        "follow_up": R,
        "close": R,
        "node_silent": "timed_out",
    },
    **{end: {"cancel": R, "follow_up": R, "close": R} for end in st.ENDS},
}
CASES = [(s, name) for s in S for name in FACTS]


def expected(status: S, fact: str) -> str:
    return ROWS[status].get(fact, _)


@pytest.mark.parametrize(("status", "fact"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
def test_every_status_with_every_fact(status: S, fact: str) -> None:
    state = TaskState(status=status, follow_ups=status is S.AWAITING_FOLLOW_UP)
    t = st.advance(state, FACTS[fact])
    want = expected(status, fact)
    if want == _:
        assert (t.state, t.changed, t.refused) == (state, False, None)
    elif want == R:
        assert t.state == state and not t.changed and t.refused
    elif want == "cancel":
        assert t.state.status is status and t.state.cancel_asked and t.changed
    else:
        assert t.state.status == S(want) and t.changed and t.refused is None
    # an end always comes with its outcome (delivered: the one the turn recorded as the
    # delivery began); nothing else carries one but a finished prompt
    if t.state.status in st.ENDS and status not in st.ENDS and fact != "delivered":
        assert t.outcome is not None and "reason" in t.outcome
    if t.state.status not in st.ENDS and fact not in ("end_turn", "prompt_recovered"):
        assert t.outcome is None


def test_the_table_names_only_known_facts() -> None:
    for row in ROWS.values():
        assert set(row) <= set(FACTS)
    assert set(ROWS) == set(S)


def test_the_first_agent_update_is_recorded_while_running_only() -> None:
    running = TaskState(S.RUNNING)
    assert st.advance(running, st.AgentUpdate()).first_update
    assert not st.advance(TaskState(S.STARTING), st.AgentUpdate()).first_update


@pytest.mark.parametrize("outcome", ["completed", "recovered"])
def test_with_follow_ups_a_finished_prompt_waits_for_the_next(outcome: str) -> None:
    t = st.advance(TaskState(S.RUNNING, follow_ups=True), st.PromptFinished("p1", outcome))
    assert t.state.status is S.AWAITING_FOLLOW_UP
    assert not t.stop_session  # the session is kept for the follow-up
    assert t.outcome is not None and t.outcome["kind"] == outcome


def test_with_follow_ups_a_failed_prompt_still_ends_the_task() -> None:
    t = st.advance(TaskState(S.RUNNING, follow_ups=True), st.PromptFinished("p1", "crashed"))
    assert t.state.status is S.CRASHED and t.stop_session


def test_without_follow_ups_the_first_outcome_ends_the_task_and_stops_the_session() -> None:
    fact = st.PromptFinished("p1", "completed", stop_reason="end_turn")
    t = st.advance(TaskState(S.RUNNING), fact)
    assert t.state.status is S.COMPLETED and t.stop_session
    assert t.outcome == {
        "kind": "completed",
        "promptId": "p1",
        "stopReason": "end_turn",
        "reason": None,
    }


def test_a_follow_up_on_a_task_without_them_says_why() -> None:
    t = st.advance(TaskState(S.RUNNING), st.FollowUpAsked("p2"))
    assert t.refused is not None and "follow-ups are off" in t.refused


@pytest.mark.parametrize(
    ("follow_ups", "outcome", "status"),
    [
        (False, "cancelled", S.CANCELLED),
        (False, "completed", S.COMPLETED),  # the turn finished before the cancel landed
        (True, "completed", S.CANCELLED),  # no waiting for a follow-up the user cancelled
        (True, "timeout", S.TIMED_OUT),
    ],
)
def test_an_outcome_after_a_cancel_ends_the_task(follow_ups: bool, outcome: str, status: S) -> None:
    asked = st.advance(TaskState(S.RUNNING, follow_ups=follow_ups), st.CancelAsked())
    assert asked.state.cancel_asked and not asked.stop_session
    again = st.advance(asked.state, st.CancelAsked())
    assert not again.changed and again.refused is None
    t = st.advance(asked.state, st.PromptFinished("p1", outcome))
    assert t.state.status is status and t.stop_session


def test_auth_required_carries_the_methods() -> None:
    t = st.advance(TaskState(S.STARTING), st.AuthRequired(METHODS, "session/new refused"))
    assert t.outcome == {
        "kind": "auth_required",
        "reason": "session/new refused",
        "authMethods": list(METHODS),
    }
    t = st.advance(TaskState(S.RUNNING), FACTS["prompt_auth"])
    assert t.outcome is not None and t.outcome["authMethods"] == list(METHODS)


def test_a_silent_node_ends_the_task_with_the_reason() -> None:
    t = st.advance(TaskState(S.RUNNING), st.NodeSilent("n1", 301))
    assert t.outcome == {"kind": "node_silent", "reason": "node n1 sent nothing for 301 s"}


def test_stop_session_only_where_a_session_may_exist() -> None:
    for status in S:
        t = st.advance(TaskState(status), st.CancelAsked())
        if t.state.status is S.CANCELLED and status not in st.ENDS:
            assert t.stop_session == (status in st.ON_NODE)
