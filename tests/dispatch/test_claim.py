"""Claiming due tasks with a lease, on SQLite and PostgreSQL: each task to one claimer at a
time, a held lease respected until it expires, ended tasks left alone (unless a session is
still to stop or a room to free)."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, insert, update

from control_plane.dispatch.leases import claim, release
from control_plane.storage.db import tasks, workspaces


def add_task(engine: Engine, task_id: str, status: str = "starting", **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(tasks).values(
                task_id=task_id,
                owner="alice",
                client_task_id=task_id,
                requirements_json="{}",
                reservation_json="{}",
                reservation_provenance_json="{}",
                placement_explanation_json="{}",
                created_at=1.0,
                status=status,
                **values,
            )
        )


def test_a_lease_gives_a_task_to_one_claimer_until_it_expires(engine: Engine) -> None:
    for i in range(6):
        add_task(engine, f"t{i}")
    first = claim(engine, "a", now=100.0, lease_s=10, limit=4)
    second = claim(engine, "b", now=101.0, lease_s=10, limit=10)
    assert len(first) == 4 and sorted(first + second) == [f"t{i}" for i in range(6)]
    assert claim(engine, "c", now=105.0, lease_s=10, limit=10) == []  # all held
    release(engine, first[0], "b")  # not b's: stays a's
    assert claim(engine, "c", now=105.0, lease_s=10, limit=10) == []
    release(engine, first[0], "a")
    assert claim(engine, "c", now=105.0, lease_s=10, limit=10) == [first[0]]
    # a claimer that died: its leases expire (a's at 110, b's at 111) and another takes them
    assert sorted(claim(engine, "d", now=110.5, lease_s=10, limit=10)) == sorted(first[1:])
    assert sorted(claim(engine, "e", now=111.5, lease_s=10, limit=10)) == sorted(second)


def test_concurrent_claimers_never_share_a_task(engine: Engine) -> None:
    for i in range(40):
        add_task(engine, f"t{i}")
    got: dict[str, list[str]] = {}

    def run(owner: str) -> None:
        got[owner] = [t for _ in range(5) for t in claim(engine, owner, 100.0, 60, 3)]

    threads = [threading.Thread(target=run, args=(f"o{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [t for ids in got.values() for t in ids]
    assert len(everything) == len(set(everything))


def test_ended_tasks_are_due_only_for_what_is_left_to_do(engine: Engine) -> None:
    add_task(engine, "done", "completed")
    add_task(engine, "to-stop", "completed", session_started_at=5.0)
    add_task(engine, "stopped", "completed", session_started_at=5.0, session_stopped_at=6.0)
    add_task(engine, "room", "cancelled", workspace_id="ws-1")
    with engine.begin() as conn:
        conn.execute(
            insert(workspaces).values(
                workspace_id="ws-1", task_id="room", owner="u", node_id="n1", state="active",
                provider="hetzner", requested_vm_size="small", vm_size_source="task",
                requirements_json="{}", reservation_json="{}",
                reservation_provenance_json="{}", placement_explanation_json="{}",
                created_at=1.0,
            )
        )  # fmt: skip
    assert sorted(claim(engine, "a", 100.0, 10, 10)) == ["room", "to-stop"]
    with engine.begin() as conn:
        conn.execute(update(workspaces).values(state="released"))
        conn.execute(update(tasks).values(lease_until=None, session_stopped_at=7.0))
    assert claim(engine, "a", 100.0, 10, 10) == []
