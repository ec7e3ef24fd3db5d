"""A task with a repository (issue 23), pure: its status once its work is done (tables with
`delivers`), the dispatcher's next step while it delivers, what a node's push answer may
be, and the task branch's name."""

from __future__ import annotations

from dataclasses import replace

import pytest

from control_plane.dispatch import deliver
from control_plane.dispatch import reconcile as rc
from control_plane.dispatch import status as st
from control_plane.dispatch.status import Status as S
from control_plane.dispatch.status import TaskState
from control_plane.github import rules

END_TURN = st.PromptFinished("p1", "completed", stop_reason="end_turn")

# (state, fact) -> (status after, stop the session?, outcome kind or None)
STATUS_CASES: list[tuple[str, TaskState, st.Fact, S, bool, str | None]] = [
    (
        "done: deliver",
        TaskState(S.RUNNING, delivers=True),
        END_TURN,
        S.DELIVERING,
        False,
        "completed",
    ),
    ("no repository: done", TaskState(S.RUNNING), END_TURN, S.COMPLETED, True, "completed"),
    (
        "follow-ups: wait, nothing pushed yet",
        TaskState(S.RUNNING, follow_ups=True, delivers=True),
        END_TURN,
        S.AWAITING_FOLLOW_UP,
        False,
        "completed",
    ),
    (
        "closed by the user: deliver",
        TaskState(S.AWAITING_FOLLOW_UP, follow_ups=True, delivers=True),
        st.CloseAsked(),
        S.DELIVERING,
        False,
        "closed",
    ),
    (
        "a failed turn pushes nothing",
        TaskState(S.RUNNING, delivers=True),
        st.PromptFinished("p1", "failed"),
        S.FAILED,
        True,
        "failed",
    ),
    (
        "a cancelled turn pushes nothing",
        TaskState(S.RUNNING, delivers=True),
        st.PromptFinished("p1", "cancelled"),
        S.CANCELLED,
        True,
        "cancelled",
    ),
    (
        "a turn that completed after a cancel pushes nothing",
        TaskState(S.RUNNING, cancel_asked=True, delivers=True),
        END_TURN,
        S.COMPLETED,
        True,
        "completed",
    ),
    (
        "cancelled while awaiting a follow-up: nothing pushed",
        TaskState(S.AWAITING_FOLLOW_UP, follow_ups=True, delivers=True),
        st.CancelAsked(),
        S.CANCELLED,
        True,
        "cancelled",
    ),
    (
        "pushed: completed, the turn's outcome kept",
        TaskState(S.DELIVERING, delivers=True),
        st.Delivered(pushed=True),
        S.COMPLETED,
        True,
        None,
    ),
    (
        "nothing to push: completed",
        TaskState(S.DELIVERING, delivers=True),
        st.Delivered(pushed=False),
        S.COMPLETED,
        True,
        None,
    ),
    (
        "the push refused: failed",
        TaskState(S.DELIVERING, delivers=True),
        st.DeliveryFailed("the push failed: rejected"),
        S.FAILED,
        True,
        "push_failed",
    ),
    (
        "cancelled while delivering: no more pushing",
        TaskState(S.DELIVERING, delivers=True),
        st.CancelAsked(),
        S.CANCELLED,
        True,
        "cancelled",
    ),
    (
        "the agent's crash does not undo finished work",
        TaskState(S.DELIVERING, delivers=True),
        st.Crashed("exit 1"),
        S.DELIVERING,
        False,
        None,
    ),
]


Case = tuple[str, TaskState, st.Fact, S, bool, str | None]


@pytest.mark.parametrize("case", STATUS_CASES, ids=[c[0] for c in STATUS_CASES])
def test_status_with_a_repository(case: Case) -> None:
    _name, state, fact, after, stop, kind = case
    t = st.advance(state, fact)
    assert t.state.status is after
    assert t.stop_session == stop
    assert (t.outcome or {}).get("kind") == kind
    if after is S.DELIVERING:
        assert after not in st.ENDS and after in st.ON_NODE


def test_a_refused_push_says_why() -> None:
    t = st.advance(TaskState(S.DELIVERING, delivers=True), st.DeliveryFailed("rejected: x"))
    assert t.outcome == {"kind": "push_failed", "reason": "rejected: x"}


NOW = 10_000.0
BASE = rc.Observed(
    status=S.DELIVERING, now=NOW, submitted_at=NOW - 60, last_heard=NOW - 5, session_started=True
)
DV = rc.DeliveryView

STEP_CASES: list[tuple[str, rc.Observed, rc.Step]] = [
    ("not pushed: push", replace(BASE, delivery=DV()), rc.PushWorkspace()),
    (
        "not pushed, a pull request wanted: push first",
        replace(BASE, delivery=DV(pull_request_wanted=True)),
        rc.PushWorkspace(),
    ),
    ("pushed: done", replace(BASE, delivery=DV(pushed=True)), rc.Record(st.Delivered(True))),
    (
        "pushed, a pull request wanted: open it",
        replace(BASE, delivery=DV(pushed=True, pull_request_wanted=True)),
        rc.OpenPullRequest(),
    ),
    (
        "pushed, the pull request recorded: done",
        replace(
            BASE, delivery=DV(pushed=True, pull_request_wanted=True, pull_request_recorded=True)
        ),
        rc.Record(st.Delivered(True)),
    ),
    (
        "nothing pushed: no pull request, done",
        replace(BASE, delivery=DV(pushed=False, pull_request_wanted=True)),
        rc.Record(st.Delivered(False)),
    ),
    (
        "a silent node while delivering",
        replace(BASE, delivery=DV(), last_heard=NOW - 301),
        rc.Record(st.NodeSilent("n1", 301)),
    ),
    (
        "completed: stop the session (after delivering)",
        replace(BASE, status=S.COMPLETED, delivery=DV(pushed=True)),
        rc.StopSession(),
    ),
    (
        "cancelled: never a push, the session stopped",
        replace(BASE, status=S.CANCELLED, delivery=DV()),
        rc.StopSession(),
    ),
    (
        "running with a repository: the prompt runs",
        replace(
            BASE,
            status=S.RUNNING,
            delivery=DV(),
            prompts=(rc.PromptView("p1", "sent", NOW - 60, True),),
        ),
        rc.Wait("the prompt runs"),
    ),
]


@pytest.mark.parametrize(("name", "observed", "step"), STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_next_step_while_delivering(name: str, observed: rc.Observed, step: rc.Step) -> None:
    T = rc.Timing(node_silent_after_s=300, node_wait_s=1800, resend_after_s=10)
    assert rc.next_step(observed, "n1", T) == step


SHA = "a" * 40
ANSWERS: list[tuple[str, object, deliver.Pushed | str]] = [
    (
        "pushed",
        {"branch": "vm-agent/t1", "base_branch": "main", "head_commit": SHA, "pushed": True},
        deliver.Pushed("main", SHA, True, None),
    ),
    (
        "nothing to push",
        {
            "branch": "vm-agent/t1",
            "base_branch": "main",
            "head_commit": SHA,
            "pushed": False,
            "reason": "no commits on the task branch",
        },
        deliver.Pushed("main", SHA, False, "no commits on the task branch"),
    ),
    ("not an object", ["pushed"], "not an object"),
    ("no pushed", {"branch": "vm-agent/t1"}, "has no `pushed`"),
    (
        "another branch",
        {"branch": "main", "head_commit": SHA, "pushed": True},
        "not the task's branch",
    ),
    (
        "a bad commit id",
        {"branch": "vm-agent/t1", "head_commit": "HEAD; rm", "pushed": True},
        "no commit id",
    ),
    ("pushed without a head", {"branch": "vm-agent/t1", "pushed": True}, "without naming"),
    (
        "a bad base",
        {"branch": "vm-agent/t1", "base_branch": "../x", "head_commit": SHA, "pushed": True},
        "no base branch",
    ),
]


@pytest.mark.parametrize(("name", "answer", "want"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_push_answers(name: str, answer: object, want: deliver.Pushed | str) -> None:
    got = deliver.push_answer(answer, "vm-agent/t1")
    if isinstance(want, str):
        assert isinstance(got, str) and want in got
    else:
        assert got == want


@pytest.mark.parametrize(
    ("task_id", "branch"),
    [
        ("t1", "vm-agent/t1"),
        ("fix:issue@12", "vm-agent/fix-issue-12"),
        ("a..b", "vm-agent/a.b"),
        ("..hidden", "vm-agent/hidden"),
        ("x.lock", "vm-agent/x"),
        ("x.", "vm-agent/x"),
        ("...", "vm-agent/task"),
    ],
)
def test_the_task_branch_is_a_valid_ref(task_id: str, branch: str) -> None:
    assert rules.task_branch(task_id) == branch
    assert rules.branch_refusal(branch) is None


def test_the_bot_author_and_clone_url() -> None:
    assert rules.bot_author(4711, "vm-agent") == (
        "vm-agent[bot]",
        "4711+vm-agent[bot]@users.noreply.github.com",
    )
    repo = rules.parse_repository("acme/widgets")
    assert rules.clone_url("http://127.0.0.1:9/", repo) == "http://127.0.0.1:9/acme/widgets.git"
