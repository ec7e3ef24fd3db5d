"""A node's life, decided: what the next step is, from what is recorded and what was observed.

Pure (no I/O, no clock: ``now`` is a fact), level-triggered like a Kubernetes controller:
the same facts give the same step on any replica after any restart. The reconcile loop
(the shell) reads the facts, takes the step as one leased database step, records it.

Two rules carry the weight:
- ownership before creation: a create is recorded (``create_sent_at``) before it is sent,
  and a node whose create got no answer is looked for by its labels before a second
  create, so no step can leave two VMs or one nobody owns;
- never reap work: a node with a turn in flight, a pending permission, a terminal or any
  background process (its heartbeat's activity), or a task placed on it that has not
  ended, is never drained for idleness; a node merely silent for less than the stale
  deadline keeps what its last heartbeat said.

Draining is a conversation with the daemon: the heartbeat's answer tells it to drain, it
refuses new sessions and says ``drained`` once nothing runs on it; a DRAINING node is
deleted only then, or when its drain deadline passes, or when it is lost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from control_plane.providers.base import VmStatus


class NodePhase(enum.StrEnum):
    REQUESTED = "requested"  # the row (with its labels) exists; no create sent
    CREATING = "creating"  # a create was sent; its answer may never have come
    BOOTING = "booting"  # the provider has the VM; waiting for the node's `ready`
    READY = "ready"  # takes tasks
    DRAINING = "draining"  # takes no new sessions; running ones finish
    DELETING = "deleting"  # a delete was sent; waiting for the provider to confirm
    GONE = "gone"  # the provider confirmed: the row may go


class Step(enum.StrEnum):
    WAIT = "wait"
    OBSERVE = "observe"  # list by the node's labels first, then decide
    CREATE = "create"
    ADOPT = "adopt"  # the listing found the VM a lost create made: record it
    MARK_READY = "mark_ready"
    DRAIN = "drain"
    DELETE = "delete"
    FORGET = "forget"  # gone: drop the row


@dataclass(frozen=True, slots=True)
class Timings:
    ready_deadline_s: float = 900.0  # from the request to `ready`
    warm_window_s: float = 300.0  # an idle ready node waits this long for the next task
    lifetime_cap_s: float = 7 * 86400.0
    stale_after_s: float = 120.0  # silence longer than this: the heartbeat is not current
    lost_after_s: float = 900.0  # silence longer than this: the node is lost
    create_grace_s: float = 120.0  # a create unanswered this long, not listed: send again
    delete_grace_s: float = 120.0  # a delete unconfirmed this long: send again
    drain_deadline_s: float = 3600.0  # a drain the daemon never finishes: deleted after this


@dataclass(frozen=True, slots=True)
class NodeFacts:
    phase: NodePhase
    now: float
    requested_at: float
    create_sent_at: float | None = None
    delete_sent_at: float | None = None
    provider_id: str | None = None
    # What listing by the node's labels found just now (None: not listed this pass);
    # `vm_found` False with `listed` True: the provider has no such VM.
    listed: bool = False
    vm_found: bool = False
    vm_status: VmStatus | None = None
    ready_at: float | None = None
    last_heard_at: float | None = None
    reported_busy: bool = False  # the last heartbeat's activity (turn, permission, terminal)
    reported_drained: bool = False  # the last heartbeat said: draining, nothing runs
    drain_started_at: float | None = None  # when DRAIN was decided
    open_tasks: int = 0  # tasks placed on this node that have not ended
    idle_since: float | None = None  # when the last task on it ended (or it became ready)
    retry_not_before: float | None = None  # a provider's backoff (429 reset, 5xx)


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    reason: str
    replace_tasks: bool = False  # its tasks go back to placement (once; then they fail)


def _busy(f: NodeFacts, t: Timings) -> str | None:
    """Why the node has work on it, or None. Silence shorter than the stale deadline keeps
    what the last heartbeat said (heartbeats get lost; a long turn goes on)."""
    if f.open_tasks:
        return f"{f.open_tasks} task(s) on it have not ended"
    if f.reported_busy:
        heard = f.last_heard_at if f.last_heard_at is not None else f.requested_at
        if f.now - heard < t.lost_after_s:
            return "its last heartbeat reported work"
    return None


def next_step(f: NodeFacts, t: Timings) -> Decision:
    if f.retry_not_before is not None and f.now < f.retry_not_before:
        return Decision(Step.WAIT, "the provider asked to wait")
    match f.phase:
        case NodePhase.REQUESTED:
            return Decision(Step.CREATE, "requested by placement")
        case NodePhase.CREATING:
            return _creating(f, t)
        case NodePhase.BOOTING:
            return _booting(f, t)
        case NodePhase.READY:
            return _ready(f, t)
        case NodePhase.DRAINING:
            return _draining(f, t)
        case NodePhase.DELETING:
            return _deleting(f, t)
        case NodePhase.GONE:
            return Decision(Step.FORGET, "the provider confirmed it is gone")
    raise AssertionError(f.phase)  # pragma: no cover - the match is exhaustive


def _creating(f: NodeFacts, t: Timings) -> Decision:
    if f.provider_id is not None:
        return _booting(f, t)
    if not f.listed:
        return Decision(Step.OBSERVE, "a create was sent: look for its VM by label first")
    if f.vm_found:
        return Decision(Step.ADOPT, "the VM of an unanswered create was found by its labels")
    sent = f.create_sent_at if f.create_sent_at is not None else f.requested_at
    if f.now - sent >= t.create_grace_s:
        return Decision(Step.CREATE, "the create was never applied: send it again")
    return Decision(Step.WAIT, "a create is in flight")


def _booting(f: NodeFacts, t: Timings) -> Decision:
    if f.ready_at is not None:
        return Decision(Step.MARK_READY, "the node reported ready")
    if f.now - f.requested_at >= t.ready_deadline_s:
        return Decision(
            Step.DELETE,
            f"not ready within {t.ready_deadline_s:.0f} s"
            + (f" (the provider says {f.vm_status})" if f.vm_status else ""),
            replace_tasks=True,
        )
    if f.listed and not f.vm_found:
        return Decision(Step.DELETE, "its VM vanished at the provider", replace_tasks=True)
    return Decision(Step.WAIT, "booting")


def _ready(f: NodeFacts, t: Timings) -> Decision:
    busy = _busy(f, t)
    ready_at = f.ready_at if f.ready_at is not None else f.requested_at
    if f.now - ready_at >= t.lifetime_cap_s:
        return Decision(Step.DRAIN, f"lifetime cap ({t.lifetime_cap_s:.0f} s) reached")
    if f.last_heard_at is not None and f.now - f.last_heard_at >= t.lost_after_s:
        return Decision(
            Step.DELETE, f"silent for {f.now - f.last_heard_at:.0f} s: lost", replace_tasks=True
        )
    if busy:
        return Decision(Step.WAIT, busy)
    if f.last_heard_at is not None and f.now - f.last_heard_at >= t.stale_after_s:
        # idle when last heard, but not heard lately: nothing new is known, keep it
        return Decision(Step.WAIT, "not heard from lately; its last heartbeat is not current")
    idle_since = f.idle_since if f.idle_since is not None else ready_at
    if f.now - idle_since >= t.warm_window_s:
        return Decision(Step.DRAIN, f"idle past the warm window ({t.warm_window_s:.0f} s)")
    return Decision(Step.WAIT, "warm: waiting for the next task")


def _draining(f: NodeFacts, t: Timings) -> Decision:
    started = f.drain_started_at if f.drain_started_at is not None else f.requested_at
    heard = f.last_heard_at
    if heard is not None and f.now - heard >= t.lost_after_s:
        return Decision(Step.DELETE, f"draining, silent for {f.now - heard:.0f} s: lost")
    # Only a report made after the drain began counts (the daemon learns of it from the
    # answer to a heartbeat); a task still open waits for its end like any work.
    drained = f.reported_drained and heard is not None and heard >= started
    if drained and not f.open_tasks:
        return Decision(Step.DELETE, "the daemon reported it is drained")
    if f.now - started >= t.drain_deadline_s:
        return Decision(Step.DELETE, f"the drain did not finish within {t.drain_deadline_s:.0f} s")
    busy = _busy(f, t)
    return Decision(Step.WAIT, f"draining: {busy or 'waiting for the daemon to say drained'}")


def _deleting(f: NodeFacts, t: Timings) -> Decision:
    if not f.listed:
        return Decision(Step.OBSERVE, "a delete was sent: is the VM gone?")
    if not f.vm_found:
        return Decision(Step.FORGET, "the provider has no such VM")
    sent = f.delete_sent_at if f.delete_sent_at is not None else f.requested_at
    if f.now - sent >= t.delete_grace_s:
        return Decision(Step.DELETE, "the delete was not applied: send it again")
    return Decision(Step.WAIT, "a delete is in flight")


def orphans(vms_node_ids: dict[str, str | None], live_nodes: set[str]) -> list[str]:
    """Provider ids of VMs (with our plane's labels) that no live node row owns.

    A row always exists before its VM (ownership before creation), so a VM without one
    was left by a row that is gone, or carries no node label at all: delete it.
    """
    return sorted(
        pid for pid, node in vms_node_ids.items() if node is None or node not in live_nodes
    )
