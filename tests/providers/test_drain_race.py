"""A warm node's drain against a placement at the same moment, on both databases. The
lifecycle reads a node idle past its warm window and decides to drain it; a placement puts
a task there before the drain is recorded. Unconditional, the drain won: the task went to
a daemon that refuses new sessions and failed `drained`. The drain is now taken under
placement's lock and only while nothing was placed since its facts: one of the two comes
first, and the other sees it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from control_plane.dispatch import workspaces as ws
from control_plane.providers.lifecycle import Step
from control_plane.storage import machines
from control_plane.storage.db import node_requests, workspaces
from tests.providers.hetzner_standin import StandIn
from tests.providers.test_node_loop import (
    SETTINGS,
    Clock,
    api,
    ask_for_node,
    loop,
    phase,
    release,
    report,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
__all__ = ["api"]  # the stand-in fixture
NODE = "n-warm"


def place(engine: Engine, task: str, now: float) -> None:
    """What placement writes when it puts a task on an existing node: under its lock."""
    with engine.begin() as conn:
        machines.take_placement_lock(conn)
        conn.execute(insert(workspaces).values(**workspace_row(task, now)))


def workspace_row(task: str, now: float) -> dict[str, Any]:
    return {
        "workspace_id": f"ws-{task}", "task_id": task, "owner": "alice", "node_id": NODE,
        "state": "active", "provider": "hetzner", "requested_vm_size": "small",
        "vm_size_source": "platform", "requirements_json": "{}", "reservation_json": "{}",
        "reservation_provenance_json": "{}", "placement_explanation_json": "{}",
        "created_at": now,
    }  # fmt: skip


async def warm_idle_node(engine: Engine, endpoint: str, clock: Clock) -> Any:
    """A node made, ready, its first task ended, idle past the warm window: due to drain."""
    nl = loop(engine, endpoint, clock)
    ask_for_node(engine, NODE, "alice", clock.now)
    assert (await nl.pass_once())[NODE].step is Step.CREATE
    report(engine, NODE, clock.now)
    clock.now += 5
    assert (await nl.pass_once())[NODE].step is Step.MARK_READY
    release(engine, NODE, clock.now)
    clock.now += SETTINGS.warm_window_s + 10
    report(engine, NODE, clock.now, ["ready"])
    return nl


def request_state(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(node_requests.c.state)).scalar_one())


def placed_after_facts(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, now: float, *, ended: bool
) -> None:
    """A placement commits right after the lifecycle read its facts (and, with `ended`,
    its task ends again before the drain is recorded)."""
    real: Callable[..., Any] = machines.reported

    def then_placed(eng: Engine, ids: Any) -> Any:
        facts = real(eng, ids)
        place(engine, "t-late", now)
        if ended:
            release(engine, NODE, now + 1)
        return facts

    monkeypatch.setattr(machines, "reported", then_placed)


@pytest.mark.parametrize("ended", [False, True], ids=["open", "came-and-went"])
async def test_a_placement_after_the_facts_keeps_the_node(
    engine: Engine, api: tuple[StandIn, str], monkeypatch: pytest.MonkeyPatch, ended: bool
) -> None:
    standin, endpoint = api
    clock = Clock()
    nl = await warm_idle_node(engine, endpoint, clock)
    placed_after_facts(monkeypatch, engine, clock.now, ended=ended)
    assert (await nl.pass_once())[NODE].step is Step.DRAIN  # decided on the stale facts
    assert phase(engine, NODE) == "ready"  # ...but not recorded: the placement came first
    assert request_state(engine) == "pending"
    monkeypatch.undo()
    clock.now += 5
    step = (await nl.pass_once())[NODE].step
    # the new task keeps it; one that ended already starts a new warm window
    assert step is Step.WAIT and phase(engine, NODE) == "ready"
    assert len(standin.live()) == 1


async def test_a_drain_first_and_placement_passes_over_the_node(
    engine: Engine, api: tuple[StandIn, str]
) -> None:
    _, endpoint = api
    clock = Clock()
    nl = await warm_idle_node(engine, endpoint, clock)
    with engine.connect() as conn:
        assert NODE in {c.node_id for c in ws.load_candidates(conn)}
    assert (await nl.pass_once())[NODE].step is Step.DRAIN
    assert phase(engine, NODE) == "draining" and request_state(engine) == "retired"
    with engine.connect() as conn:  # what placement reads under its lock
        assert NODE not in {c.node_id for c in ws.load_candidates(conn)}


async def test_a_drain_waits_for_a_placement_in_flight_and_loses_to_it(
    engine: Engine, api: tuple[StandIn, str]
) -> None:
    """Real concurrency: the placement holds its lock, its task written, not committed;
    the drain blocks on the lock, then sees the task."""
    _, endpoint = api
    clock = Clock()
    await warm_idle_node(engine, endpoint, clock)
    [machine] = machines.claim(engine, "replica-b", clock.now, 30.0, 10)
    idle_since = machines.reported(engine, [NODE])[NODE].last_released_at
    outcome: list[bool] = []

    def drain() -> None:
        outcome.append(
            machines.record_drain(
                engine, machine, "replica-b", clock.now, reason="idle", idle_since=idle_since
            )
        )

    drainer = threading.Thread(target=drain)
    with engine.begin() as conn:
        machines.take_placement_lock(conn)
        conn.execute(insert(workspaces).values(**workspace_row("t-late", clock.now)))
        drainer.start()
        time.sleep(0.5)
        assert drainer.is_alive(), "the drain did not wait for placement's lock"
    drainer.join(timeout=30)
    assert outcome == [False]  # with no placement it drains: the test above
    assert phase(engine, NODE) == "ready" and request_state(engine) == "pending"
