# ruff: noqa: E501  (a table reads best one case a line)
"""A node's next step, as a table: every phase against the facts that move it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from control_plane.providers.base import VmStatus
from control_plane.providers.lifecycle import (
    NodeFacts,
    NodePhase,
    Step,
    Timings,
    next_step,
    orphans,
)
from control_plane.storage.machines import reported_work

T = Timings(
    ready_deadline_s=900, warm_window_s=300, lifetime_cap_s=86400,
    stale_after_s=120, lost_after_s=900, create_grace_s=120, delete_grace_s=120,
)  # fmt: skip
BASE = NodeFacts(phase=NodePhase.REQUESTED, now=10_000.0, requested_at=10_000.0)
P = NodePhase


def facts(**kw: object) -> NodeFacts:
    return replace(BASE, **kw)  # type: ignore[arg-type]


READY = dict(phase=P.READY, requested_at=1000.0, ready_at=2000.0, last_heard_at=9990.0)
DRAINING = {**READY, "phase": P.DRAINING, "drain_started_at": 9900.0}

CASES: list[tuple[str, NodeFacts, Step, bool]] = [
    ("requested: create", facts(), Step.CREATE, False),
    ("a provider backoff holds any step", facts(retry_not_before=10_001.0), Step.WAIT, False),
    ("creating, unanswered: observe first", facts(phase=P.CREATING, create_sent_at=9990.0), Step.OBSERVE, False),
    ("creating, found by label: adopt", facts(phase=P.CREATING, create_sent_at=9000.0, listed=True, vm_found=True), Step.ADOPT, False),
    ("creating, not found, in flight: wait", facts(phase=P.CREATING, create_sent_at=9990.0, listed=True), Step.WAIT, False),
    ("creating, not found past the grace: create again", facts(phase=P.CREATING, create_sent_at=9880.0, listed=True), Step.CREATE, False),
    ("creating with an id: as booting", facts(phase=P.CREATING, provider_id="7"), Step.WAIT, False),
    ("booting: wait", facts(phase=P.BOOTING, provider_id="7", requested_at=9500.0), Step.WAIT, False),
    ("booting, reported ready", facts(phase=P.BOOTING, provider_id="7", ready_at=9999.0), Step.MARK_READY, False),
    ("booting past the ready deadline: delete, tasks placed again", facts(phase=P.BOOTING, provider_id="7", requested_at=9100.0, vm_status=VmStatus.CREATING), Step.DELETE, True),
    ("booting, its VM vanished", facts(phase=P.BOOTING, provider_id="7", requested_at=9900.0, listed=True), Step.DELETE, True),
    ("ready, warm, idle a while: wait", facts(**READY, idle_since=9800.0), Step.WAIT, False),
    ("ready, idle past the warm window: drain", facts(**READY, idle_since=9700.0), Step.DRAIN, False),
    ("ready, never had a task, past the window: drain", facts(**READY), Step.DRAIN, False),
    ("ready, a task open: never drained", facts(**READY, idle_since=1.0, open_tasks=1), Step.WAIT, False),
    ("ready, heartbeat reports a turn: never drained", facts(**READY, idle_since=1.0, reported_busy=True), Step.WAIT, False),
    ("ready, busy, heartbeats lost but not for long: kept", facts(**{**READY, "last_heard_at": 9500.0}, idle_since=1.0, reported_busy=True), Step.WAIT, False),
    ("ready, idle, not heard lately: kept (its heartbeat is old)", facts(**{**READY, "last_heard_at": 9800.0}, idle_since=1.0), Step.WAIT, False),
    ("ready, silent past lost: delete, tasks placed again", facts(**{**READY, "last_heard_at": 9000.0}, open_tasks=2), Step.DELETE, True),
    ("ready, past the lifetime cap: drain even if busy", facts(**{**READY, "ready_at": 10_000.0 - 86400}, open_tasks=1), Step.DRAIN, False),
    ("draining, busy: wait", facts(**DRAINING, reported_busy=True), Step.WAIT, False),
    ("draining, idle but not said drained: wait for the daemon", facts(**DRAINING), Step.WAIT, False),
    ("draining, the daemon said drained: delete", facts(**DRAINING, reported_drained=True), Step.DELETE, False),
    ("draining, drained said before the drain began: wait", facts(**{**DRAINING, "drain_started_at": 9995.0}, reported_drained=True), Step.WAIT, False),
    ("draining, drained but a task still open: wait", facts(**DRAINING, reported_drained=True, open_tasks=1), Step.WAIT, False),
    ("draining, busy past the drain deadline: delete", facts(**{**DRAINING, "drain_started_at": 10_000.0 - 3600}, reported_busy=True), Step.DELETE, False),
    ("draining, silent past lost: delete", facts(**{**DRAINING, "last_heard_at": 9000.0}, reported_busy=True), Step.DELETE, False),
    ("draining, an old row (no drain start): its deadline counts from the request", facts(**{**DRAINING, "drain_started_at": None}), Step.DELETE, False),
    ("deleting: observe", facts(phase=P.DELETING, provider_id="7", delete_sent_at=9990.0), Step.OBSERVE, False),
    ("deleting, still there, in flight: wait", facts(phase=P.DELETING, provider_id="7", delete_sent_at=9990.0, listed=True, vm_found=True), Step.WAIT, False),
    ("deleting, still there past the grace: again", facts(phase=P.DELETING, provider_id="7", delete_sent_at=9000.0, listed=True, vm_found=True), Step.DELETE, False),
    ("deleting, gone: forget", facts(phase=P.DELETING, provider_id="7", listed=True), Step.FORGET, False),
    ("gone: forget", facts(phase=P.GONE), Step.FORGET, False),
]  # fmt: skip


@pytest.mark.parametrize(("name", "f", "step", "replace_tasks"), CASES, ids=[c[0] for c in CASES])
def test_next_step(name: str, f: NodeFacts, step: Step, replace_tasks: bool) -> None:
    decision = next_step(f, T)
    assert (decision.step, decision.replace_tasks) == (step, replace_tasks), decision.reason
    assert decision.reason


def test_every_phase_has_a_case() -> None:
    assert {c[1].phase for c in CASES} == set(NodePhase)


def test_a_long_turn_spanning_many_warm_windows_is_never_drained() -> None:
    # the attack: a turn of hours, heartbeats every 30 s with a few lost (gaps < stale)
    f = facts(**READY, idle_since=2000.0, reported_busy=True)
    for minute in range(0, 600):
        now = 10_000.0 + minute * 60
        heard = now - (90 if minute % 7 == 0 else 20)  # some heartbeats lost
        d = next_step(replace(f, now=now, last_heard_at=heard), replace(T, lifetime_cap_s=1e9))
        assert d.step is Step.WAIT, (minute, d.reason)


def test_a_terminal_or_background_work_keeps_the_node_through_many_windows() -> None:
    # what the heartbeat's activity says (a terminal left open, a dev server) is `busy`;
    # heartbeats lost for less than the stale deadline keep what the last one said
    for activity in ({"terminals": 1}, {"background": 2}, {"permissions": 1}, {"turns": 1}):
        busy = reported_work([], {"activity": activity})
        f = facts(**READY, idle_since=2000.0, reported_busy=busy)
        for minute in range(0, 120):
            now = 10_000.0 + minute * 60
            heard = now - (110 if minute % 5 == 0 else 15)
            d = next_step(replace(f, now=now, last_heard_at=heard), T)
            assert d.step is Step.WAIT, (activity, minute, d.reason)


def test_a_drain_waits_for_the_long_turn_then_deletes_once_drained() -> None:
    # the lifetime cap drains a node with a turn in flight: never deleted while it runs
    # (within the drain deadline), deleted on the first heartbeat saying drained
    f = facts(**DRAINING, reported_busy=True)
    for minute in range(0, 50):
        now = 10_000.0 + minute * 60
        d = next_step(replace(f, now=now, last_heard_at=now - 20), T)
        assert d.step is Step.WAIT, (minute, d.reason)
    done = replace(f, now=13_000.0, last_heard_at=12_990.0, reported_busy=False)
    assert next_step(done, T).step is Step.WAIT
    assert next_step(replace(done, reported_drained=True), T).step is Step.DELETE


BUSY_REPORTS: list[tuple[str, list[object], object, bool]] = [
    ("nothing", [], None, False),
    ("an idle session", [{"session_id": "s", "state": "ready"}], {"activity": {}}, False),
    ("a session prompting (an old daemon: no activity)", [{"session_id": "s", "state": "prompting"}], {}, True),
    ("a turn", [], {"activity": {"turns": 1}}, True),
    ("a pending permission", [], {"activity": {"permissions": 1}}, True),
    ("a terminal", [], {"activity": {"terminals": 1}}, True),
    ("a background process", [], {"activity": {"background": 3}}, True),
    ("all zero", [], {"activity": {"turns": 0, "permissions": 0, "terminals": 0, "background": 0}}, False),
    ("junk activity counts as nothing", [], {"activity": {"turns": "1", "terminals": True}}, False),
    ("activity not a map", [], {"activity": [1]}, False),
    ("usage not a map", ["junk"], "x", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "sessions", "usage", "busy"), BUSY_REPORTS, ids=[c[0] for c in BUSY_REPORTS]
)
def test_reported_work(name: str, sessions: list[object], usage: object, busy: bool) -> None:
    assert reported_work(sessions, usage) is busy


def test_the_same_facts_give_the_same_step() -> None:
    for _, f, _, _ in CASES:
        assert next_step(f, T) == next_step(replace(f), T)


def test_orphans_are_vms_no_live_row_owns() -> None:
    vms = {"1": "n-1", "2": "n-2", "3": None, "4": "n-gone"}
    assert orphans(vms, {"n-1", "n-2"}) == ["3", "4"]
    assert orphans({}, {"n-1"}) == []
