"""A task's status, pure: (state, fact) -> transition, tested as a table of every status
with every fact (tests/dispatch/test_status.py), as vm_agent/core/machine.py is for a session.

A task is `queued` until placed, `waiting_for_node` until its node is ready, `starting`
while its session starts on the node, `running` while a prompt is out, and
`awaiting_follow_up` (only with follow-ups) between prompts. A task with a repository whose
work is done (its last prompt completed, or the user closed it) is `delivering` while its
branch is pushed (and its pull request opened): `completed` once that is recorded, `failed`
if the push was refused. It ends once: `completed`,
`failed`, `crashed`, `cancelled`, `timed_out` or `auth_required`, with an outcome (what
ended it: the prompt's outcome with its stop reason, or a `kind` of our own) and a reason.
A fact that does not apply to the status changes nothing (`changed` is False); a fact a
user asked for that does not apply is `refused` with why (the API answers 409).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    QUEUED = "queued"
    WAITING_FOR_NODE = "waiting_for_node"
    STARTING = "starting"
    RUNNING = "running"
    AWAITING_FOLLOW_UP = "awaiting_follow_up"
    DELIVERING = "delivering"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    AUTH_REQUIRED = "auth_required"


ENDS: frozenset[Status] = frozenset(
    {
        Status.COMPLETED,
        Status.FAILED,
        Status.CRASHED,
        Status.CANCELLED,
        Status.TIMED_OUT,
        Status.AUTH_REQUIRED,
    }
)
# Where the task has (or is getting) a session on its node.
ON_NODE: frozenset[Status] = frozenset(
    {Status.STARTING, Status.RUNNING, Status.AWAITING_FOLLOW_UP, Status.DELIVERING}
)
# A prompt's outcome (docs/outcomes.md) as the status it ends a task in.
_PROMPT_ENDS: dict[str, Status] = {
    "completed": Status.COMPLETED,
    "cancelled": Status.CANCELLED,
    "timeout": Status.TIMED_OUT,
    "crashed": Status.CRASHED,
    "auth_required": Status.AUTH_REQUIRED,
    "failed": Status.FAILED,
    # the turn was cut by a crash and not replayed: the work was not done
    "recovered": Status.FAILED,
}
# Outcomes after which a task with follow-ups waits for the next prompt.
_FOLLOWABLE = frozenset({"completed", "recovered"})


# -- facts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    node_id: str


@dataclass(frozen=True)
class NodeReady:
    pass


@dataclass(frozen=True)
class SessionStarted:
    pass


@dataclass(frozen=True)
class SessionStartFailed:
    reason: str


@dataclass(frozen=True)
class PromptSent:
    prompt_id: str


@dataclass(frozen=True)
class AgentUpdate:
    at: float | None = None  # when the node logged it


@dataclass(frozen=True)
class PromptFinished:
    prompt_id: str
    outcome: str  # the daemon's: completed, cancelled, timeout, crashed, ...
    stop_reason: str | None = None
    reason: str | None = None
    error_code: int | None = None
    auth_methods: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class PermissionAsked:
    request_id: str


@dataclass(frozen=True)
class PermissionAnswered:
    request_id: str


@dataclass(frozen=True)
class Crashed:
    """An unrecovered crash report: the session is gone."""

    reason: str
    report: dict[str, Any] | None = None  # the agent.crash_report event's data


@dataclass(frozen=True)
class AuthRequired:
    """The agent refused to start (or to prompt) for want of credentials."""

    methods: tuple[dict[str, Any], ...]
    reason: str


@dataclass(frozen=True)
class CancelAsked:
    pass


@dataclass(frozen=True)
class FollowUpAsked:
    prompt_id: str


@dataclass(frozen=True)
class CloseAsked:
    pass


@dataclass(frozen=True)
class Delivered:
    """The task's branch was pushed (`pushed`), or had nothing to push, and its pull
    request opened when it asked for one: the work came back."""

    pushed: bool


@dataclass(frozen=True)
class DeliveryFailed:
    """The push was refused or failed (or the pull request could not be opened)."""

    reason: str


@dataclass(frozen=True)
class NodeSilent:
    """The node sent nothing (ready, heartbeat, events) for `silent_s`, past the deadline."""

    node_id: str
    silent_s: float


@dataclass(frozen=True)
class NoNodeReady:
    """Its node never reported ready, nor did the one asked for in its place."""

    reason: str


Fact = (
    Placed
    | NodeReady
    | SessionStarted
    | SessionStartFailed
    | PromptSent
    | AgentUpdate
    | PromptFinished
    | PermissionAsked
    | PermissionAnswered
    | Crashed
    | AuthRequired
    | CancelAsked
    | FollowUpAsked
    | CloseAsked
    | NodeSilent
    | Delivered
    | DeliveryFailed
    | NoNodeReady
)


@dataclass(frozen=True)
class TaskState:
    """What deciding needs: the status and the two flags that change what an outcome means."""

    status: Status = Status.QUEUED
    follow_ups: bool = False
    cancel_asked: bool = False
    delivers: bool = False  # the task has a repository: its work is pushed at its end


@dataclass(frozen=True)
class Transition:
    state: TaskState
    changed: bool  # the status (or the cancel flag) moved: record a transition row
    cause: str  # for the transition row and the log
    outcome: dict[str, Any] | None = None  # set when the task ends
    refused: str | None = None  # a user's ask that does not apply here (HTTP 409)
    first_update: bool = False  # record the first agent update's time
    stop_session: bool = False  # the session on the node is to be stopped
    record: dict[str, Any] = field(default_factory=dict)  # extra detail for the row


def _same(state: TaskState, cause: str, **kw: Any) -> Transition:
    return Transition(state, False, cause, **kw)


def _to(state: TaskState, status: Status, cause: str, **kw: Any) -> Transition:
    return Transition(replace(state, status=status), True, cause, **kw)


def _end(
    state: TaskState, status: Status, cause: str, outcome: dict[str, Any], *, on_node: bool
) -> Transition:
    return Transition(
        replace(state, status=status), True, cause, outcome=outcome, stop_session=on_node
    )


def _prompt_outcome(f: PromptFinished) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": f.outcome, "promptId": f.prompt_id}
    if f.stop_reason is not None:
        out["stopReason"] = f.stop_reason
    out["reason"] = f.reason
    if f.error_code is not None:
        out["errorCode"] = f.error_code
    if f.auth_methods is not None:
        out["authMethods"] = list(f.auth_methods)
    return out


def advance(state: TaskState, fact: Fact) -> Transition:
    """The task's next state after `fact`, and what to record. Pure."""
    s = state.status
    on_node = s in ON_NODE
    outcome: dict[str, Any]
    if s in ENDS:
        if isinstance(fact, CancelAsked | FollowUpAsked | CloseAsked):
            return _same(state, f"{type(fact).__name__}", refused=f"the task has ended ({s})")
        return _same(state, f"{type(fact).__name__}: the task has ended")
    match fact:
        case Placed(node_id):
            if s is Status.QUEUED:
                return _to(state, Status.WAITING_FOR_NODE, f"placed on node {node_id}")
        case NodeReady():
            if s is Status.WAITING_FOR_NODE:
                return _to(state, Status.STARTING, "the node is ready")
        case SessionStarted():
            if s is Status.STARTING:
                return _same(state, "the session started on the node")
        case SessionStartFailed(reason):
            if s is Status.STARTING:
                outcome = {"kind": "start_failed", "reason": reason}
                return _end(
                    state, Status.FAILED, "the session did not start", outcome, on_node=True
                )
        case PromptSent(prompt_id):
            if s is Status.STARTING:
                return _to(state, Status.RUNNING, f"prompt {prompt_id} sent")
        case AgentUpdate():
            if s is Status.RUNNING:
                return _same(state, "agent update", first_update=True)
        case PromptFinished() as f:
            if s is Status.RUNNING:
                return _finished(state, f)
        case PermissionAsked(request_id):
            if s is Status.RUNNING:
                return _same(state, f"permission {request_id} asked")
        case PermissionAnswered(request_id):
            if s is Status.RUNNING:
                return _same(state, f"permission {request_id} answered")
        case Crashed(reason, report):
            # delivering: the turn is done; the daemon's push (not the agent) decides
            if on_node and s is not Status.DELIVERING:
                outcome = {"kind": "crashed", "reason": reason, "crashReport": report}
                return _end(state, Status.CRASHED, "the agent crashed", outcome, on_node=True)
        case AuthRequired(methods, reason):
            if s in (Status.STARTING, Status.RUNNING):
                outcome = {"kind": "auth_required", "reason": reason, "authMethods": list(methods)}
                return _end(
                    state,
                    Status.AUTH_REQUIRED,
                    "the agent needs credentials",
                    outcome,
                    on_node=True,
                )
        case CancelAsked():
            return _cancel(state)
        case FollowUpAsked(prompt_id):
            if s is Status.AWAITING_FOLLOW_UP:
                return _to(state, Status.RUNNING, f"follow-up {prompt_id} asked")
            why = "follow-ups are off for this task" if not state.follow_ups else f"it is {s}"
            return _same(state, "follow-up refused", refused=f"no follow-up now: {why}")
        case CloseAsked():
            if s is Status.AWAITING_FOLLOW_UP:
                outcome = {"kind": "closed", "reason": "closed by the user"}
                if state.delivers:
                    return _to(state, Status.DELIVERING, "closed by the user", outcome=outcome)
                return _end(state, Status.COMPLETED, "closed by the user", outcome, on_node=True)
            return _same(
                state,
                "close refused",
                refused=f"only a task awaiting a follow-up can be closed; it is {s}",
            )
        case NodeSilent(node_id, silent_s):
            if s is not Status.QUEUED:
                reason = f"node {node_id} sent nothing for {silent_s:.0f} s"
                outcome = {"kind": "node_silent", "reason": reason}
                return _end(state, Status.TIMED_OUT, reason, outcome, on_node=on_node)
        case Delivered(pushed):
            if s is Status.DELIVERING:
                cause = "the task branch was pushed" if pushed else "nothing to push"
                # the outcome stays the one of the turn (or the close) that did the work
                return Transition(
                    replace(state, status=Status.COMPLETED), True, cause, stop_session=True
                )
        case DeliveryFailed(reason):
            if s is Status.DELIVERING:
                outcome = {"kind": "push_failed", "reason": reason}
                return _end(
                    state, Status.FAILED, "the work did not come back", outcome, on_node=True
                )
        case NoNodeReady(reason):
            if s in (Status.QUEUED, Status.WAITING_FOR_NODE):
                outcome = {"kind": "no_node", "reason": f"no node became ready: {reason}"}
                return _end(state, Status.FAILED, outcome["reason"], outcome, on_node=False)
    return _same(state, f"{type(fact).__name__} does not apply while {s}")


def _finished(state: TaskState, f: PromptFinished) -> Transition:
    outcome = _prompt_outcome(f)
    cause = f"prompt {f.prompt_id} ended {f.outcome}"
    if state.cancel_asked:
        # The user wanted it over: a turn that finished anyway still ends the task.
        status = Status.COMPLETED if f.outcome == "completed" else _PROMPT_ENDS[f.outcome]
        if f.outcome == "completed" and state.follow_ups:
            status = Status.CANCELLED
        return _end(state, status, cause, outcome, on_node=True)
    if state.follow_ups and f.outcome in _FOLLOWABLE:
        return Transition(
            replace(state, status=Status.AWAITING_FOLLOW_UP), True, cause, outcome=outcome
        )
    status = _PROMPT_ENDS.get(f.outcome, Status.FAILED)
    if status is Status.COMPLETED and state.delivers:
        return _to(state, Status.DELIVERING, cause, outcome=outcome)
    return _end(state, status, cause, outcome, on_node=True)


def _cancel(state: TaskState) -> Transition:
    s = state.status
    outcome = {"kind": "cancelled", "reason": "cancelled by the user"}
    if s is Status.RUNNING:
        if state.cancel_asked:
            return _same(state, "cancel asked again")
        # The prompt's own outcome (cancelled) ends the task; the cancel goes to the node.
        return Transition(replace(state, cancel_asked=True), True, "cancel asked")
    return _end(state, Status.CANCELLED, "cancelled by the user", outcome, on_node=s in ON_NODE)


def is_end(status: str) -> bool:
    return status in {s.value for s in ENDS}
