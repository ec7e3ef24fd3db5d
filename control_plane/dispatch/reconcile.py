"""What the next step of a task is, pure: from what is wanted (the task's row, its prompts,
the answers to deliver) and what was observed (the node's reports, the session's events),
one step. Level-triggered: the same rows give the same step, on any replica, after any
restart. Tested as a table (tests/dispatch/test_reconcile.py); `loop.py` carries it out.

Also pure: which facts a session's events are (`facts_of`), and which option a permission
policy picks (`policy_option`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from control_plane.dispatch import status as st
from control_plane.dispatch.status import Status


@dataclass(frozen=True)
class Timing:
    node_silent_after_s: float = 300.0  # a node on which a task runs, heard from
    node_wait_s: float = 1800.0  # a node the task waits for, never heard from
    resend_after_s: float = 10.0  # a sent prompt the node has not started


@dataclass(frozen=True)
class PromptView:
    prompt_id: str
    state: str  # pending, sent, finished
    sent_at: float | None
    seen: bool  # the node's events show it started (or ended)


@dataclass(frozen=True)
class DeliveryView:
    """A task's repository, as far as the next step goes."""

    pushed: bool | None = None  # the node's push as recorded (None: not yet)
    pull_request_wanted: bool = False
    pull_request_recorded: bool = False


@dataclass(frozen=True)
class Observed:
    status: Status
    now: float
    submitted_at: float
    cancel_asked: bool = False
    cancel_sent: bool = False
    session_started: bool = False
    session_stopped: bool = False
    node_ready: bool = False  # reported `ready`, and its address is known
    last_heard: float | None = None  # the node's latest ready/heartbeat
    prompts: tuple[PromptView, ...] = ()
    answers: tuple[tuple[str, str], ...] = ()  # (request_id, option_id) to deliver
    in_flight: frozenset[str] = frozenset()  # prompt ids this replica has a call out for
    workspace_active: bool = False  # the task's room on its node is still taken
    delivery: DeliveryView | None = None  # None: the task has no repository
    # When the task's current node was asked for: a node placed again (never ready) gets a
    # whole wait of its own, not what is left of the first node's.
    node_asked_at: float | None = None
    # Mode/model changes the owner asked for, not yet relayed: (change id, field, value).
    changes: tuple[tuple[str, str, str], ...] = ()


# -- steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wait:
    why: str


@dataclass(frozen=True)
class Record:
    """A fact to record; no call to the node."""

    fact: st.Fact


@dataclass(frozen=True)
class StartSession:
    pass


@dataclass(frozen=True)
class SendPrompt:
    prompt_id: str


@dataclass(frozen=True)
class AnswerPermission:
    request_id: str
    option_id: str


@dataclass(frozen=True)
class CancelPrompt:
    pass


@dataclass(frozen=True)
class StopSession:
    pass


@dataclass(frozen=True)
class ChangeSetting:
    """Relay the owner's mode or model change to the session (setting_changes.py)."""

    change_id: str
    field: str
    value: str


@dataclass(frozen=True)
class PushWorkspace:
    """The node pushes the task's branch (`workspace/push`: idempotent, a second call for
    the same head answers the same); the answer is recorded on the repository's row."""


@dataclass(frozen=True)
class OpenPullRequest:
    """The pushed branch becomes a pull request through the App (found before made)."""


@dataclass(frozen=True)
class ReleaseWorkspace:
    """The task ended and its session is gone: its room on the node is free again."""


@dataclass(frozen=True)
class ForgetSession:
    """The task ended and its node is silent: nobody to stop the session on (a daemon that
    comes back lists its old sessions as stopped)."""


Step = (
    Wait
    | Record
    | StartSession
    | SendPrompt
    | AnswerPermission
    | CancelPrompt
    | StopSession
    | ForgetSession
    | ReleaseWorkspace
    | PushWorkspace
    | OpenPullRequest
    | ChangeSetting
)


def _silence(o: Observed, node_id: str, t: Timing) -> st.NodeSilent | None:
    if o.last_heard is None:
        waited = o.now - max(o.submitted_at, o.node_asked_at or o.submitted_at)
        return st.NodeSilent(node_id, waited) if waited > t.node_wait_s else None
    silent = o.now - o.last_heard
    return st.NodeSilent(node_id, silent) if silent > t.node_silent_after_s else None


def next_step(o: Observed, node_id: str, t: Timing) -> Step:
    """The one step to take now. Pure."""
    s = o.status
    silent = _silence(o, node_id, t)
    if s in st.ENDS:
        if o.session_started and not o.session_stopped:
            return StopSession() if silent is None else ForgetSession()
        return ReleaseWorkspace() if o.workspace_active else Wait("ended")
    if s is Status.QUEUED:
        return Wait("not placed")
    if silent is not None:
        return Record(silent)
    if s is Status.WAITING_FOR_NODE:
        return Record(st.NodeReady()) if o.node_ready else Wait("the node is not ready")
    if s is Status.STARTING and not o.session_started:
        return StartSession()
    if s is Status.RUNNING and o.cancel_asked:
        return Wait("cancel sent") if o.cancel_sent else CancelPrompt()
    if o.answers and s is Status.RUNNING:
        request_id, option_id = o.answers[0]
        return AnswerPermission(request_id, option_id)
    # A change goes to the live session, before a follow-up it should apply to.
    if o.changes and o.session_started and s in (Status.RUNNING, Status.AWAITING_FOLLOW_UP):
        return ChangeSetting(*o.changes[0])
    if s is Status.AWAITING_FOLLOW_UP:
        return Wait("awaiting a follow-up")
    if s is Status.DELIVERING:
        return _deliver(o.delivery)
    for p in o.prompts:
        if p.state == "pending":
            return SendPrompt(p.prompt_id)
        # Sent by a replica that died, or over a connection that dropped, before the node
        # started it: the same id again is safe (the node runs an id once).
        stale = p.sent_at is None or o.now - p.sent_at >= t.resend_after_s
        if p.state == "sent" and not p.seen and p.prompt_id not in o.in_flight and stale:
            return SendPrompt(p.prompt_id)
    return Wait("the prompt runs")


def _deliver(d: DeliveryView | None) -> Step:
    """The work is done: push, then the pull request (when asked for and something was
    pushed), then record that the work came back. A failure is recorded by the shell."""
    if d is None:  # a repository's row cannot go away; should it, nothing is left to push
        return Record(st.Delivered(pushed=False))
    if d.pushed is None:
        return PushWorkspace()
    if d.pushed and d.pull_request_wanted and not d.pull_request_recorded:
        return OpenPullRequest()
    return Record(st.Delivered(pushed=d.pushed))


# -- events as facts -----------------------------------------------------------------------


def _methods(data: dict[str, Any]) -> tuple[dict[str, Any], ...] | None:
    methods = data.get("auth_methods")
    if isinstance(methods, list) and methods:
        return tuple(m for m in methods if isinstance(m, dict))
    return None


def facts_of(events: Iterable[tuple[str, float, Any]]) -> list[st.Fact]:
    """A session's events (type, ts, data), in seq order, as facts. Pure."""
    out: list[st.Fact] = []
    for kind, ts, data in events:
        d = data if isinstance(data, dict) else {}
        if kind == "acp.update":
            out.append(st.AgentUpdate(ts))
        elif kind == "prompt.started" and isinstance(d.get("prompt_id"), str):
            out.append(st.PromptSent(d["prompt_id"]))
        elif kind == "prompt.finished" and isinstance(d.get("prompt_id"), str):
            out.append(finished(d))
        elif kind == "permission.requested" and isinstance(d.get("request_id"), str):
            out.append(st.PermissionAsked(d["request_id"]))
        elif kind == "permission.resolved" and isinstance(d.get("request_id"), str):
            out.append(st.PermissionAnswered(d["request_id"]))
        elif kind == "agent.crash_report" and d.get("recovered") is False:
            reason = str(d.get("message") or d.get("classification") or "crashed")
            out.append(st.Crashed(reason, d))
        elif kind == "session.state" and d.get("state") == "error":
            methods = _methods(d)
            if methods is not None:
                out.append(st.AuthRequired(methods, str(d.get("note") or "auth required")))
    return out


def finished(d: dict[str, Any]) -> st.PromptFinished:
    """A prompt's outcome (the `prompt.finished` event's data, or session/prompt's answer)."""
    methods = _methods(d)
    code = d.get("error_code")
    return st.PromptFinished(
        prompt_id=str(d["prompt_id"]),
        outcome=str(d.get("outcome") or "failed"),
        stop_reason=d.get("stop_reason") if isinstance(d.get("stop_reason"), str) else None,
        reason=d.get("reason") if isinstance(d.get("reason"), str) else None,
        error_code=code if isinstance(code, int) else None,
        auth_methods=methods,
    )


_KINDS = {"allow": ("allow_once", "allow_always"), "reject": ("reject_once", "reject_always")}


def policy_option(policy: str, options: Sequence[dict[str, Any]]) -> str | None:
    """The option a task's policy picks (`allow`/`reject`), or None (`ask`: the user). Pure."""
    for kind in _KINDS.get(policy, ()):
        for option in options:
            if option.get("kind") == kind and isinstance(option.get("optionId"), str):
                return str(option["optionId"])
    return None
