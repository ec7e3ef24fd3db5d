"""A real flooding agent waits for the log's commits (threat model: an agent cannot flood the
log or the viewers).

The daemon runs the fake agent's `flood` scenario (a real process writing pre-encoded
updates as fast as its pipe takes them) while another process holds the event log's
SQLite write lock, so nothing can commit. The daemon must stop taking the agent's updates
two relay chunks past the last commit: the agent's pipe fills, and stays full while the
daemon's event loop turns on (a daemon that kept reading would take more lines out of a
full pipe at its next turn: seen by the seq the log hands out next). Viewers are sent only
what committed. Once the lock goes, every update arrives, in order.
"""

from __future__ import annotations

import array
import fcntl
import os
import subprocess
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from tests.server.harness import Client, Daemon, daemon, fake
from vm_agent.session.traffic import CONFIRM_EVERY

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

COUNT, SIZE = 8_000, 200
_LOCK = (
    "import sqlite3, sys\n"
    "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "c.execute('BEGIN IMMEDIATE')\n"  # the write lock: the daemon's commits wait on it
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
    "c.execute('ROLLBACK')\n"
)


@contextmanager
def pipe_of(pid: int, fd: int) -> Iterator[int]:
    """Another read end of a process's pipe, to ask how full it is (never read from)."""
    mine = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield mine
    finally:
        os.close(mine)


def _full(pipe: int) -> bool:
    """Whether the writer cannot put more in: a pipe is full by its page slots, not by its
    bytes, so the head page (partly read) and the tail page (partly written) may be short
    of a page each while every slot is taken and the writer waits."""
    waiting = array.array("i", [0])
    fcntl.ioctl(pipe, termios.FIONREAD, waiting)
    return waiting[0] >= fcntl.fcntl(pipe, fcntl.F_GETPIPE_SZ) - 2 * os.sysconf("SC_PAGESIZE")


def _written(transcripts: Path) -> int:
    """How many flood updates the agent has written to its stdout (it notes each batch)."""
    return sum(path.read_text().count("\n") for path in transcripts.glob("*.jsonl"))


def _taken(d: Daemon) -> int:
    """The last seq the log handed out for s1: a probe event takes the next one."""
    return d.log.submit("s1", "test.probe", {}).seq - 1


async def _prompt(v: Client, outcome: list[str]) -> None:
    answer = await v.call(
        "session/prompt",
        {"session_id": "s1", "prompt_id": "p1", "prompt": [{"type": "text", "text": "go"}]},
    )
    outcome.append(answer["outcome"])


async def _full_or_done(pipe: int, transcripts: Path) -> None:
    """Until the agent's pipe is full, or the agent has written its whole flood."""
    with anyio.fail_after(30):
        while not _full(pipe) and _written(transcripts) < COUNT:
            await anyio.sleep(0.01)


async def _settled(d: Daemon, pipe: int, transcripts: Path) -> tuple[int, bool]:
    """Turns the event loop until the daemon has taken nothing more for five turns with the
    pipe full (a reader that reads would take lines from a full pipe at every turn): the
    seq taken, and whether that happened before the flood ran out."""
    taken, quiet = _taken(d), 0
    for probes in range(1, 1000):
        if _written(transcripts) >= COUNT:
            break
        await anyio.sleep(0)  # the selector is polled: the full pipe is readable
        await wait_all_tasks_blocked()  # whoever could read has read
        now = _taken(d) - probes  # less the probes that asked before
        quiet = quiet + 1 if now == taken and _full(pipe) else 0
        if quiet == 5:
            return taken, True
        taken = now
    return taken, False


async def test_a_flooding_agent_waits_for_the_logs_commits(tmp_path: Path) -> None:
    transcripts = tmp_path / "agent-state"
    agent = fake(
        "flood", "--count", str(COUNT), "--size", str(SIZE), "--state-dir", str(transcripts)
    )
    async with daemon(tmp_path, [agent]) as d, d.viewer() as v:
        await d.start(v, "flood", session_id="s1")
        await v.call("session/subscribe", {"session_id": "s1"})
        before = d.log.head_seq("s1")
        db = tmp_path / "state" / "events.sqlite3"
        assert db.exists()
        outcome: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_prompt, v, outcome)
            # The flood has begun (the prompt's own state must commit first)...
            with anyio.fail_after(30):
                while d.log.head_seq("s1") < before + 2:
                    await anyio.sleep(0.01)
            # ...then nothing can commit (the daemon's writer waits on the lock).
            lock = subprocess.Popen(
                [sys.executable, "-c", _LOCK, str(db)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert lock.stdout is not None
                assert await anyio.to_thread.run_sync(lock.stdout.readline) == "locked\n"
                pid = d.supervisor.get("s1").agent_pid
                assert pid is not None
                with pipe_of(pid, 1) as pipe:
                    await _full_or_done(pipe, transcripts)
                    taken, settled = await _settled(d, pipe, transcripts)
                    committed = d.log.head_seq("s1")
                seen = [e["seq"] for e in v.events if e["seq"] > committed]
                written = _written(transcripts)
            finally:
                assert lock.stdin is not None
                lock.stdin.close()  # the lock goes: commits resume
                await anyio.to_thread.run_sync(lock.wait, 30)
        print(f"\n{written} written, {taken} taken, {committed} committed, settled: {settled}")
        assert written < COUNT, "the agent wrote its whole flood while nothing committed"
        assert settled, "the daemon kept reading what it cannot commit"
        # Two relay chunks past the last commit (and the prompt's state event), no more.
        assert taken - committed <= 2 * CONFIRM_EVERY + 1, (taken, committed)
        assert seen == []  # viewers were sent only what committed
        assert outcome == ["completed"]
        updates = [e for e in await v.events_until(d.log.head_seq("s1")) if e["seq"] > before]
        assert [e["seq"] for e in updates] == list(range(before + 1, d.log.head_seq("s1") + 1))
        texts = [
            e["data"]["update"]["content"]["text"][:8] for e in updates if e["type"] == "acp.update"
        ]
        assert texts == [f"{i:08d}" for i in range(COUNT)]
