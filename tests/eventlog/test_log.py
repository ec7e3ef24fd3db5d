"""The event log against real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from vm_agent.eventlog import Event, EventLog, EventLogClosed, EventLogError, EventsDropped

pytestmark = pytest.mark.anyio


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "events.sqlite3"


def _committed_rows(db: Path) -> int:
    """Rows another connection sees: only what was committed."""
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


async def read_all(log: EventLog, session_id: str, after_seq: int = 0) -> list[Event]:
    out: list[Event] = []
    while True:
        page = await log.read(session_id, after_seq, limit=333)
        if not page:
            return out
        out.extend(page)
        after_seq = page[-1].seq


async def test_append_assigns_gapless_seqs_per_session_and_reads_back(db: Path) -> None:
    async with EventLog.open(db) as log:
        for i in range(30):
            event = await log.append(f"s{i % 3}", "acp.update", {"i": i}, ts=100.0 + i)
            assert event.seq == i // 3 + 1
        for s in range(3):
            events = await read_all(log, f"s{s}")
            assert [e.seq for e in events] == list(range(1, 11))
            assert [e.data["i"] for e in events] == list(range(s, 30, 3))
            assert all(json.loads(e.payload)["session_id"] == f"s{s}" for e in events)
            assert log.head_seq(f"s{s}") == 10
        assert await log.read("s0", after_seq=7) == (await log.read("s0"))[7:]
        assert await log.read("s0", after_seq=10) == []
        assert await log.read("nobody") == []
        assert await log.read_payloads("nobody") == []
        payloads = await log.read_payloads("s1", after_seq=4, limit=3)
        assert [json.loads(p)["seq"] for p in payloads] == [5, 6, 7]
        assert log.head_seq("nobody") == 0


async def test_payload_is_exactly_the_event(db: Path) -> None:
    update = {"sessionId": "acp-1", "update": {"sessionUpdate": "brand_new_kind", "x": [1]}}
    async with EventLog.open(db) as log:
        event = await log.append("s", "acp.update", update, ts=12.5)
        (stored,) = await log.read("s")
    assert stored == event
    assert stored.params() == {
        "seq": 1,
        "session_id": "s",
        "ts": 12.5,
        "type": "acp.update",
        "data": update,
    }
    assert stored.payload.endswith(json.dumps(update, separators=(",", ":")) + "}")


async def test_concurrent_appenders_get_ordered_gapless_seqs(db: Path) -> None:
    returned: dict[str, list[int]] = {f"s{i}": [] for i in range(5)}

    async def appender(session_id: str, worker: int) -> None:
        for n in range(100):
            event = await log.append(session_id, "acp.update", {"w": worker, "n": n}, ts=1.0)
            returned[session_id].append(event.seq)

    async with EventLog.open(db) as log, anyio.create_task_group() as tg:
        for worker in range(40):
            tg.start_soon(appender, f"s{worker % 5}", worker)
    async with EventLog.open(db) as log:
        for session_id, seqs in returned.items():
            assert sorted(seqs) == list(range(1, 801))
            events = await read_all(log, session_id)
            assert [e.seq for e in events] == list(range(1, 801))
            # each worker's own events are in its call order
            for worker in range(40):
                mine = [e.data["n"] for e in events if e.data["w"] == worker]
                assert mine == sorted(mine)
            rowids = [e.rowid for e in events]
            assert rowids == sorted(rowids)


async def test_reopen_resumes_counters_and_keeps_everything(db: Path) -> None:
    async with EventLog.open(db) as log:
        for i in range(5):
            await log.append("a", "session.state", {"i": i}, ts=1.0)
        await log.append("b", "session.state", {"i": 0}, ts=1.0)
    async with EventLog.open(db) as log:
        assert log.heads() == {"a": 5, "b": 1}
        event = await log.append("a", "prompt.started", {}, ts=2.0)
        assert event.seq == 6
        assert [e.seq for e in await read_all(log, "a")] == [1, 2, 3, 4, 5, 6]


async def test_close_commits_what_was_appended_even_when_cancelled(db: Path) -> None:
    stalled, stall = threading.Event(), threading.Event()

    def hold_the_writer() -> None:
        stalled.set()
        stall.wait()

    with anyio.CancelScope() as scope:
        async with EventLog.open(db) as log, anyio.create_task_group() as tg:
            # The writer thread is busy: nothing commits until the close.
            tg.start_soon(log._thread.call, hold_the_writer)
            await anyio.to_thread.run_sync(stalled.wait)
            for i in range(10):
                log.submit("s", "acp.update", {"i": i}, 1.0)  # queued, never awaited
            for i in range(10, 20):
                tg.start_soon(log.append, "s", "acp.update", {"i": i}, 1.0)
            await wait_all_tasks_blocked()  # each append has its seq and waits for a commit
            assert _committed_rows(db) == 0
            scope.cancel()
            stall.set()  # the close (shielded) may now use the writer
    async with EventLog.open(db) as log:
        events = await read_all(log, "s")
        assert [e.data["i"] for e in events] == list(range(20))  # all of it, in order
        assert [e.seq for e in events] == list(range(1, 21))
        assert log.head_seq("s") == 20


async def test_append_after_close_is_refused(db: Path) -> None:
    async with EventLog.open(db) as log:
        await log.append("s", "t", {}, ts=1.0)
    with pytest.raises(EventLogClosed):
        await log.append("s", "t", {}, ts=1.0)


async def test_bad_data_is_refused_without_using_a_seq(db: Path) -> None:
    async with EventLog.open(db) as log:
        with pytest.raises(TypeError):
            await log.append("s", "t", {"x": {1, 2}}, ts=1.0)
        with pytest.raises(ValueError):
            await log.append("s", "t", {}, ts=float("nan"))
        assert (await log.append("s", "t", {}, ts=1.0)).seq == 1


async def test_flush_and_listener_see_only_durable_events(db: Path) -> None:
    seen: list[tuple[str, int]] = []

    def listener(events: Sequence[Event]) -> None:
        seen.extend((e.session_id, e.seq) for e in events)

    async with EventLog.open(db) as log:
        remove = log.add_listener(listener)
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(log.append, "s", "acp.update", {"i": i}, 1.0)
        await log.flush()
        assert seen == [("s", n) for n in range(1, 11)]
        remove()
        await log.append("s", "acp.update", {}, ts=1.0)
        assert len(seen) == 10


async def test_file_and_directory_modes(db: Path) -> None:
    async with EventLog.open(db) as log:
        await log.append("s", "t", {}, ts=1.0)
        for path in db.parent.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


async def test_existing_file_is_narrowed_to_0600(db: Path) -> None:
    db.parent.mkdir()
    db.touch(mode=0o644)
    db.chmod(0o644)
    async with EventLog.open(db):
        pass
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


async def test_retention_drops_oldest_and_says_so(db: Path) -> None:
    blob = "x" * 100
    async with EventLog.open(db, retention_bytes_per_session=2_000) as log:
        for i in range(50):
            await log.append("big", "acp.update", {"blob": blob, "i": i}, ts=1.0)
        await log.append("small", "acp.update", {}, ts=1.0)
        first, head, dropped = await log.stream_bounds("big")
        assert head == 50 and dropped == first - 1 > 0
        with pytest.raises(EventsDropped) as info:
            await log.read("big", after_seq=0)
        assert info.value.first_available_seq == first
        assert info.value.dropped_count == first - 1
        with pytest.raises(EventsDropped) as info:
            await log.read("big", after_seq=first - 3)
        assert info.value.dropped_count == 2
        with pytest.raises(EventsDropped):
            await log.read_payloads("big", after_seq=0)
        payloads = await log.read_payloads("big", after_seq=first - 1, limit=10**6)
        kept = await read_all(log, "big", after_seq=first - 1)
        assert payloads == [e.payload for e in kept]
        assert [e.seq for e in kept] == list(range(first, 51))
        assert sum(len(e.payload.encode()) for e in kept) <= 2_000
        assert [e.seq for e in await log.read("small")] == [1]  # other sessions untouched
    async with EventLog.open(db, retention_bytes_per_session=2_000) as log:
        assert await log.stream_bounds("big") == (first, 50, first - 1)
        assert (await log.append("big", "t", {}, ts=1.0)).seq == 51


async def test_retention_never_drops_what_the_outbox_has_not_delivered(db: Path) -> None:
    blob = "x" * 100
    async with EventLog.open(db, retention_bytes_per_session=1_000) as log:
        assert await log.get_delivery_cursor("control-plane") == 0
        for i in range(30):
            await log.append("s", "acp.update", {"blob": blob, "i": i}, ts=1.0)
        assert (await log.stream_bounds("s"))[0] == 1  # everything held
        _, position = await log.read_global(0, limit=10)
        await log.set_delivery_cursor("control-plane", position)  # trims up to the cursor
        first, _, _ = await log.stream_bounds("s")
        assert first == 11
        await log.set_delivery_cursor("control-plane", 10**9)
        kept = await read_all(log, "s", after_seq=(await log.stream_bounds("s"))[0] - 1)
        assert sum(len(e.payload.encode()) for e in kept) <= 1_000


async def test_read_global_bounds_filter_and_cursor_persistence(db: Path) -> None:
    async with EventLog.open(db) as log:
        for i in range(10):
            await log.append(f"s{i % 2}", "acp.update" if i % 3 else "session.state", {}, ts=1.0)
        events, pos = await log.read_global(0, limit=4)
        assert [e.rowid for e in events] == [1, 2, 3, 4] and pos == 4
        events, pos = await log.read_global(4, limit=100)
        assert [e.rowid for e in events] == [5, 6, 7, 8, 9, 10] and pos == 10
        events, pos = await log.read_global(0, limit=100, types={"session.state"})
        assert [e.rowid for e in events] == [1, 4, 7, 10] and pos == 10
        events, pos = await log.read_global(0, limit=2, types={"session.state"})
        assert [e.rowid for e in events] == [1, 4] and pos == 4
        events, pos = await log.read_global(7, limit=100, types={"nothing"})
        assert events == [] and pos == 10  # filtered-out events are passed over
        size = len(events_payload := (await log.read_global(0, 1))[0][0].payload.encode())
        assert events_payload
        events, pos = await log.read_global(0, limit=100, max_bytes=size * 3)
        assert len(events) == 3 and pos == 3
        events, pos = await log.read_global(0, limit=100, max_bytes=1)
        assert len(events) == 1 and pos == 1  # one event even over the byte bound
        await log.set_delivery_cursor("cp", pos)
    async with EventLog.open(db) as log:
        assert await log.get_delivery_cursor("cp") == 1
        assert await log.get_delivery_cursor("other") == 0


async def test_rowids_are_never_reused_after_retention(db: Path) -> None:
    async with EventLog.open(db, retention_bytes_per_session=200) as log:
        for _ in range(5):
            last = await log.append("s", "acp.update", {"blob": "y" * 150}, ts=1.0)
    async with EventLog.open(db) as log:
        assert (await log.append("t", "t", {}, ts=1.0)).rowid == last.rowid + 1


async def test_sessions_registry_roundtrip(db: Path) -> None:
    async with EventLog.open(db) as log:
        created = await log.upsert_session(
            "s1", agent="fake", cwd="/w", state="starting", metadata={"k": [1]}, now=10.0
        )
        assert created.created_at == created.updated_at == 10.0
        await log.append("s1", "session.state", {"state": "ready"}, ts=11.0)
        await log.upsert_session(
            "s1", agent="fake", cwd="/w", state="ready", acp_session_id="acp-9", now=12.0
        )
        await log.upsert_session("s2", agent="codex", cwd="/x", state="error", now=13.0)
    async with EventLog.open(db) as log:
        s1 = await log.get_session("s1")
        assert s1 is not None
        assert (s1.state, s1.acp_session_id, s1.created_at, s1.updated_at) == (
            "ready",
            "acp-9",
            10.0,
            12.0,
        )
        assert (s1.head_seq, s1.first_seq, s1.metadata) == (1, 1, {})
        assert [s.session_id for s in await log.list_sessions()] == ["s1", "s2"]
        s2 = await log.get_session("s2")
        assert s2 is not None and s2.head_seq == 0 and s2.agent == "codex"
        assert await log.get_session("nope") is None


@pytest.mark.slow
async def test_read_of_100k_events(db: Path) -> None:
    data: dict[str, object] = {
        "sessionUpdate": "agent_message_chunk",
        "content": {"type": "text", "text": "x" * 100},
    }
    async with EventLog.open(db) as log, anyio.create_task_group() as tg:
        for w in range(100):
            tg.start_soon(_append_n, log, "big", data, 1000, w)
    async with EventLog.open(db) as log:
        events = await log.read("big", 0, limit=100_000)
        assert len(events) == 100_000
        assert [e.seq for e in events] == list(range(1, 100_001))
        payloads = await log.read_payloads("big", 0, limit=100_000)
        assert payloads == [e.payload for e in events]


async def _append_n(
    log: EventLog, session_id: str, data: dict[str, object], n: int, w: int
) -> None:
    for _ in range(n):
        await log.append(session_id, "acp.update", data, ts=float(w))


async def test_concurrent_appends_share_commits(db: Path) -> None:
    commits: list[int] = []
    async with EventLog.open(db) as log:
        log.add_listener(lambda events: commits.append(len(events)))
        async with anyio.create_task_group() as tg:
            for w in range(50):
                tg.start_soon(_append_n, log, f"s{w % 5}", {}, 20, w)
    assert sum(commits) == 1000
    assert len(commits) < 1000 / 5  # group commit: many appends per transaction


async def test_a_second_opener_of_the_same_file_is_refused(db: Path) -> None:
    async with EventLog.open(db) as log:
        await log.append("s", "t", {}, ts=1.0)
        with pytest.raises(EventLogError, match="in use"):
            async with EventLog.open(db):
                pass
        await log.append("s", "t", {}, ts=1.0)
    async with EventLog.open(db) as log:  # released at close
        assert log.head_seq("s") == 2


async def test_an_error_in_the_body_propagates_as_itself(db: Path) -> None:
    with pytest.raises(KeyError):
        async with EventLog.open(db) as log:
            await log.append("s", "t", {}, ts=1.0)
            raise KeyError("boom")
    async with EventLog.open(db) as log:
        assert log.head_seq("s") == 1


async def test_submit_assigns_seqs_at_once_and_commits_in_order(db: Path) -> None:
    seen: list[int] = []
    async with EventLog.open(db) as log:
        log.add_listener(lambda events: seen.extend(e.seq for e in events))
        handles = [log.submit("s", "acp.update", {"i": i}, ts=1.0) for i in range(5000)]
        assert [h.seq for h in handles] == list(range(1, 5001))
        assert log.head_seq("s") == 0  # nothing durable yet: no await happened
        last = await handles[-1].durable()
        assert last.seq == 5000 and log.head_seq("s") == 5000
        assert seen == list(range(1, 5001))  # every earlier one committed too
        assert (await handles[0].durable()).data == {"i": 0}
        assert [e.seq for e in await read_all(log, "s")] == list(range(1, 5001))


async def test_a_failed_commit_stops_the_log_and_loses_only_that_batch(db: Path) -> None:
    async with EventLog.open(db) as log:
        await log.append("s", "t", {}, ts=1.0)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON events WHEN NEW.type = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    conn.commit()
    conn.close()
    errors: list[BaseException] = []
    with pytest.raises(BaseExceptionGroup) as group:
        async with EventLog.open(db) as log:
            ok = log.submit("s", "t", {}, ts=1.0)
            bad = log.submit("s", "boom", {}, ts=1.0)
            # The writer's failure cancels the body (structured concurrency);
            # shielded, it can still see what each handle says.
            with anyio.CancelScope(shield=True):
                for handle in (ok, bad):
                    try:
                        await handle.durable()
                    except EventLogClosed as exc:
                        errors.append(exc)
                with pytest.raises(EventLogClosed):
                    await log.append("s", "t", {}, ts=1.0)
    assert group.group_contains(sqlite3.IntegrityError)
    assert len(errors) == 2  # the whole batch failed together
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER fail")
    conn.commit()
    conn.close()
    async with EventLog.open(db) as log:
        assert log.head_seq("s") == 1
        assert (await log.append("s", "t", {}, ts=1.0)).seq == 2


async def test_appends_within_the_commit_interval_share_the_next_commit(db: Path) -> None:
    commits: list[list[tuple[str, int]]] = []
    async with EventLog.open(db, commit_interval_s=3600.0) as log:
        log.add_listener(lambda events: commits.append([(e.session_id, e.seq) for e in events]))
        # Into an idle log: committed at once, alone.
        await log.append("a", "acp.update", {})
        # Ten sessions send one event each, one after another, and between two of them
        # everything that can run runs: without a cadence the writer would commit each
        # alone; within the interval they all wait.
        for i in range(10):
            log.submit(f"s{i}", "acp.update", {})
            await wait_all_tasks_blocked()
        assert commits == [[("a", 1)]]
    # and the next commit (here the close's) takes them all at once
    assert commits == [[("a", 1)], [(f"s{i}", 1) for i in range(10)]]


async def test_a_negative_commit_interval_is_refused(db: Path) -> None:
    with pytest.raises(ValueError, match="commit_interval_s"):
        async with EventLog.open(db, commit_interval_s=-1):
            pass


async def test_the_wal_is_copied_back_by_the_checkpointer_not_by_commits(db: Path) -> None:
    async with EventLog.open(db) as log:
        writer_setting = log._writer.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert writer_setting == 0  # commits never stop to checkpoint
        size_before = db.stat().st_size
        checkpointer = log.checkpointer
        assert checkpointer.done == 0
        big = {"text": "x" * 4096}
        for _ in range(3):
            last = [log.submit("s", "acp.update", big) for _ in range(400)]
            await last[-1].durable()  # a few commits holding more than 4 MiB in all
        with anyio.fail_after(30):
            while checkpointer.done == 0:
                await anyio.sleep(0.01)
        # The events reached the database file itself, while the log stayed open.
        assert db.stat().st_size > size_before + 4 * 1024 * 1024
        assert len(await read_all(log, "s")) == 1200
