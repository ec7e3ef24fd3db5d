"""Reads while no new reader connection can be opened (the process is out of descriptors):
they wait for the one the log keeps, and none fails."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

from vm_agent.eventlog import EventLog
from vm_agent.eventlog.readers import ReaderPool

pytestmark = pytest.mark.anyio


async def test_reads_share_the_kept_reader_when_no_other_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EventLog.open(tmp_path / "events.sqlite3") as log:
        for i in range(20):
            await log.append("s1", "acp.update", {"i": i})
        attempts = 0

        def refuse(self: ReaderPool) -> sqlite3.Connection:
            nonlocal attempts
            attempts += 1
            raise sqlite3.OperationalError("unable to open database file")

        # From now on every new connection fails, as it does at the descriptor limit.
        monkeypatch.setattr(ReaderPool, "_connect", refuse)
        results: list[int] = []

        async def read() -> None:
            events = await log.read("s1", 0, 100)
            results.append(len(events))

        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(read)
        assert results == [20] * 12
        assert attempts >= 1  # some reads did try to open another, and waited instead
        assert [r.session_id for r in await log.list_sessions()] == []


def test_with_no_connection_at_all_the_error_is_raised(tmp_path: Path) -> None:
    pool = ReaderPool(tmp_path / "missing" / "events.sqlite3")
    with pytest.raises(sqlite3.OperationalError):
        pool.run(lambda conn: conn.execute("SELECT 1").fetchall())
    pool.close()


def test_a_waiting_read_is_released_by_close(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    sqlite3.connect(path).close()
    pool = ReaderPool(path)
    pool.prime()
    held = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def hold(conn: sqlite3.Connection) -> None:
        held.set()
        release.wait(10)

    def failing(self: ReaderPool) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    holder = threading.Thread(target=pool.run, args=(hold,))
    holder.start()
    assert held.wait(10)
    pool._connect = failing.__get__(pool)  # type: ignore[method-assign]

    def waiter() -> None:
        try:
            pool.run(lambda conn: None)
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    waiting = threading.Thread(target=waiter)
    waiting.start()
    pool.close()
    release.set()
    holder.join(10)
    waiting.join(10)
    assert not waiting.is_alive()
    assert len(errors) == 1
