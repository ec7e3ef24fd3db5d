"""The next step of a task, as a table: what is wanted and observed in, one step out;
events as facts; what a permission policy picks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from control_plane.dispatch import reconcile as rc
from control_plane.dispatch import status as st
from control_plane.dispatch.status import Status as S

T = rc.Timing(node_silent_after_s=300, node_wait_s=1800, resend_after_s=10)
NOW = 10_000.0
BASE = rc.Observed(status=S.RUNNING, now=NOW, submitted_at=NOW - 60, last_heard=NOW - 5)
PENDING = rc.PromptView("p1", "pending", None, seen=False)
SENT = rc.PromptView("p1", "sent", NOW - 1, seen=False)
STALE = rc.PromptView("p1", "sent", NOW - 11, seen=False)
SEEN = rc.PromptView("p1", "sent", NOW - 60, seen=True)
CHG, CHG2 = ("c1", "mode", "code"), ("c2", "model", "smart")

CASES: list[tuple[str, rc.Observed, rc.Step]] = [
    ("queued waits", replace(BASE, status=S.QUEUED), rc.Wait("not placed")),
    (
        "a node not ready",
        replace(BASE, status=S.WAITING_FOR_NODE),
        rc.Wait("the node is not ready"),
    ),
    (
        "a ready node",
        replace(BASE, status=S.WAITING_FOR_NODE, node_ready=True),
        rc.Record(st.NodeReady()),
    ),
    (
        "a node never heard of, within the wait",
        replace(BASE, status=S.WAITING_FOR_NODE, last_heard=None),
        rc.Wait("the node is not ready"),
    ),
    (
        "a node never heard of, past the wait",
        replace(BASE, status=S.WAITING_FOR_NODE, last_heard=None, submitted_at=NOW - 1801),
        rc.Record(st.NodeSilent("n1", 1801)),
    ),
    (
        "a node placed again (the first never ready): its own whole wait",
        replace(
            BASE,
            status=S.WAITING_FOR_NODE,
            last_heard=None,
            submitted_at=NOW - 1801,
            node_asked_at=NOW - 900,
        ),
        rc.Wait("the node is not ready"),
    ),
    (
        "a node placed again, past its own wait",
        replace(
            BASE,
            status=S.WAITING_FOR_NODE,
            last_heard=None,
            submitted_at=NOW - 3700,
            node_asked_at=NOW - 1801,
        ),
        rc.Record(st.NodeSilent("n1", 1801)),
    ),
    (
        "a node silent past the deadline",
        replace(BASE, last_heard=NOW - 301, prompts=(SENT,)),
        rc.Record(st.NodeSilent("n1", 301)),
    ),
    ("starting: start the session", replace(BASE, status=S.STARTING), rc.StartSession()),
    (
        "started: send the prompt",
        replace(BASE, status=S.STARTING, session_started=True, prompts=(PENDING,)),
        rc.SendPrompt("p1"),
    ),
    ("running: a pending follow-up", replace(BASE, prompts=(PENDING,)), rc.SendPrompt("p1")),
    ("running: just sent", replace(BASE, prompts=(SENT,)), rc.Wait("the prompt runs")),
    ("running: sent long ago, unseen", replace(BASE, prompts=(STALE,)), rc.SendPrompt("p1")),
    (
        "running: unseen but our call is out",
        replace(BASE, prompts=(STALE,), in_flight=frozenset({"p1"})),
        rc.Wait("the prompt runs"),
    ),
    ("running: the node has it", replace(BASE, prompts=(SEEN,)), rc.Wait("the prompt runs")),
    (
        "running: an answer to deliver",
        replace(BASE, prompts=(SEEN,), answers=(("perm-1", "allow"),)),
        rc.AnswerPermission("perm-1", "allow"),
    ),
    ("running: cancel asked", replace(BASE, cancel_asked=True), rc.CancelPrompt()),
    (
        "running: cancel sent",
        replace(BASE, cancel_asked=True, cancel_sent=True, answers=(("perm-1", "allow"),)),
        rc.Wait("cancel sent"),
    ),
    (
        "awaiting a follow-up",
        replace(BASE, status=S.AWAITING_FOLLOW_UP, prompts=(SEEN,)),
        rc.Wait("awaiting a follow-up"),
    ),
    *[
        (
            f"{end}: stop the session",
            replace(BASE, status=end, session_started=True),
            rc.StopSession(),
        )
        for end in sorted(st.ENDS)
    ],
    *[
        (
            f"{end}: stopped",
            replace(BASE, status=end, session_started=True, session_stopped=True),
            rc.Wait("ended"),
        )
        for end in sorted(st.ENDS)
    ],
    ("ended before a session", replace(BASE, status=S.CANCELLED), rc.Wait("ended")),
    (
        "ended, session stopped: free the room",
        replace(
            BASE,
            status=S.COMPLETED,
            session_started=True,
            session_stopped=True,
            workspace_active=True,
        ),
        rc.ReleaseWorkspace(),
    ),
    (
        "ended before a session: free the room",
        replace(BASE, status=S.CANCELLED, workspace_active=True),
        rc.ReleaseWorkspace(),
    ),
    (
        "ended, session still to stop: that first",
        replace(BASE, status=S.FAILED, session_started=True, workspace_active=True),
        rc.StopSession(),
    ),
    (
        "ended on a silent node: nobody to stop the session on",
        replace(BASE, status=S.TIMED_OUT, session_started=True, last_heard=NOW - 301),
        rc.ForgetSession(),
    ),
    (
        "ended: a silent node does not matter",
        replace(BASE, status=S.COMPLETED, last_heard=NOW - 10_000),
        rc.Wait("ended"),
    ),
    # The owner's mode/model changes: to the live session, oldest first, before a follow-up.
    (
        "running: a change goes to the session",
        replace(BASE, session_started=True, prompts=(SEEN,), changes=(CHG, CHG2)),
        rc.ChangeSetting("c1", "mode", "code"),
    ),
    (
        "awaiting a follow-up: the change before the next prompt",
        replace(BASE, status=S.AWAITING_FOLLOW_UP, session_started=True, changes=(CHG,)),
        rc.ChangeSetting("c1", "mode", "code"),
    ),
    (
        "a new follow-up and a change: the change first",
        replace(BASE, session_started=True, prompts=(PENDING,), changes=(CHG,)),
        rc.ChangeSetting("c1", "mode", "code"),
    ),
    (
        "a permission answer before a change",
        replace(BASE, session_started=True, answers=(("r1", "o1"),), changes=(CHG,)),
        rc.AnswerPermission("r1", "o1"),
    ),
    (
        "a cancel before a change",
        replace(BASE, session_started=True, cancel_asked=True, changes=(CHG,)),
        rc.CancelPrompt(),
    ),
    (
        "starting: the session first, the change after",
        replace(BASE, status=S.STARTING, changes=(CHG,)),
        rc.StartSession(),
    ),
    (
        "waiting for the node: a change waits",
        replace(BASE, status=S.WAITING_FOR_NODE, changes=(CHG,)),
        rc.Wait("the node is not ready"),
    ),
    (
        "delivering: no change",
        replace(
            BASE,
            status=S.DELIVERING,
            session_started=True,
            changes=(CHG,),
            delivery=rc.DeliveryView(),
        ),
        rc.PushWorkspace(),
    ),
    (
        "ended: a change left is never sent",
        replace(
            BASE, status=S.COMPLETED, session_started=True, session_stopped=True, changes=(CHG,)
        ),
        rc.Wait("ended"),
    ),
]


@pytest.mark.parametrize(("name", "observed", "step"), CASES, ids=[c[0] for c in CASES])
def test_next_step(name: str, observed: rc.Observed, step: rc.Step) -> None:
    assert rc.next_step(observed, "n1", T) == step


def test_the_same_rows_give_the_same_step() -> None:
    # level-triggered: no hidden state, any replica decides the same
    for _, observed, step in CASES:
        assert rc.next_step(observed, "n1", T) == rc.next_step(replace(observed), "n1", T) == step


METHODS = [{"id": "key", "name": "API key"}]


def test_events_as_facts() -> None:
    events = [
        ("session.state", 1.0, {"state": "ready"}),
        ("prompt.started", 2.0, {"prompt_id": "p1", "prompt": []}),
        ("acp.update", 3.0, {"update": {"sessionUpdate": "agent_message_chunk"}}),
        ("permission.requested", 4.0, {"request_id": "perm-1", "request": {}}),
        ("permission.resolved", 5.0, {"request_id": "perm-1"}),
        ("agent.crash_report", 6.0, {"recovered": True, "message": "came back"}),
        ("agent.crash_report", 7.0, {"recovered": False, "message": "gone for good"}),
        ("prompt.finished", 8.0, {"prompt_id": "p1", "outcome": "completed",
                                  "stop_reason": "end_turn"}),
        ("session.state", 9.0, {"state": "error", "note": "auth", "auth_methods": METHODS}),
        ("session.state", 10.0, {"state": "error", "note": "no methods"}),
        ("prompt.finished", 11.0, "not a dict"),
        ("something.new", 12.0, {}),
    ]  # fmt: skip
    assert rc.facts_of(events) == [
        st.PromptSent("p1"),
        st.AgentUpdate(3.0),
        st.PermissionAsked("perm-1"),
        st.PermissionAnswered("perm-1"),
        st.Crashed("gone for good", {"recovered": False, "message": "gone for good"}),
        st.PromptFinished("p1", "completed", stop_reason="end_turn"),
        st.AuthRequired(tuple(METHODS), "auth"),
    ]


def test_an_auth_required_outcome_keeps_its_methods() -> None:
    f = rc.finished({"prompt_id": "p", "outcome": "auth_required", "auth_methods": METHODS,
                     "error_code": -32000, "reason": "login"})  # fmt: skip
    assert f == st.PromptFinished("p", "auth_required", None, "login", -32000, tuple(METHODS))


OPTIONS = [
    {"optionId": "a1", "kind": "allow_always"},
    {"optionId": "a0", "kind": "allow_once"},
    {"optionId": "r0", "kind": "reject_once"},
]


@pytest.mark.parametrize(
    ("policy", "options", "picked"),
    [
        ("allow", OPTIONS, "a0"),  # once before always
        ("reject", OPTIONS, "r0"),
        ("ask", OPTIONS, None),
        ("allow", [{"optionId": "r0", "kind": "reject_once"}], None),
        ("reject", [{"optionId": "a1", "kind": "allow_always"}], None),
        ("allow", [{"kind": "allow_once"}], None),
    ],
)
def test_policy_option(policy: str, options: list[dict[str, str]], picked: str | None) -> None:
    assert rc.policy_option(policy, options) == picked
