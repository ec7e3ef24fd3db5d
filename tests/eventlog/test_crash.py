"""A writer killed with SIGKILL loses nothing it reported durable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from vm_agent.eventlog import EventLog

# Appends from many tasks and prints "session seq" once each append returned.
WRITER = r"""
import sys, anyio
from vm_agent.eventlog import EventLog

async def worker(log, sid, w):
    n = 0
    while True:
        event = await log.append(sid, "acp.update", {"w": w, "n": n, "pad": "p" * 150})
        sys.stdout.write(f"{event.session_id} {event.seq}\n")
        sys.stdout.flush()
        n += 1

async def main():
    async with EventLog.open(sys.argv[1], retention_bytes_per_session=10**9) as log:
        async with anyio.create_task_group() as tg:
            for w in range(20):
                tg.start_soon(worker, log, f"s{w % 4}", w)

anyio.run(main)
"""


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_sigkill_mid_write_loses_nothing_reported_durable(tmp_path: Path, round_: int) -> None:
    db = tmp_path / "events.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    reported: dict[str, int] = {}
    try:
        for count, line in enumerate(proc.stdout):
            sid, seq = line.split()
            reported[sid] = max(reported.get(sid, 0), int(seq))
            if count == 1500 + 700 * round_:
                os.kill(proc.pid, signal.SIGKILL)
                break
        for line in proc.stdout:  # what was printed before the kill landed
            if not line.endswith("\n"):
                break  # cut by the kill: not a complete report
            sid, seq = line.split()
            reported[sid] = max(reported.get(sid, 0), int(seq))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    async def check() -> None:
        async with EventLog.open(db) as log:
            for sid, seq in reported.items():
                events = await log.read(sid, 0, limit=1_000_000)
                assert [e.seq for e in events] == list(range(1, len(events) + 1))
                assert len(events) >= seq
                assert log.head_seq(sid) == len(events)
            # and the log goes on from there
            event = await log.append("s0", "t", {})
            assert event.seq == log.head_seq("s0") == len(await log.read("s0", 0, 10**6))

    anyio.run(check)
