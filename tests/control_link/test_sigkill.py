"""An outbox sender killed with SIGKILL in the middle of a batch resumes from its cursor:
the control plane ends up with every forwarded event exactly once."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.text import TextReceiveStream

from tests.token_files import write_token
from vm_agent.eventlog import EventLog

from .harness import NODE, control_plane
from .test_faults import assert_stored_in_order, expected_events, stored_events

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

REPO = Path(__file__).resolve().parents[2]


async def _lines_until(proc: Process, needle: str, count: int) -> int:
    """Read the child's stderr until `needle` was seen `count` times; returns the count."""
    assert proc.stderr is not None
    seen = 0
    buffer = ""
    async for chunk in TextReceiveStream(proc.stderr):
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        seen += sum(needle in line for line in lines)
        if seen >= count:
            break
    return seen


async def _drain(stream: ByteReceiveStream) -> None:
    async for _ in stream:
        pass


async def test_sigkill_mid_batch_then_restart_delivers_everything_once(tmp_path: Path) -> None:
    log_path = tmp_path / "state" / "events.sqlite3"
    async with control_plane(tmp_path) as cp, cp.serving() as url:
        token_file = write_token(tmp_path / "callback-token", cp.callback_token())
        faults = cp.faults
        faults.fail_every_other_events_batch = True
        faults.store_before_failing = True

        def argv(append: int) -> list[str]:
            child = "tests.control_link.outbox_child"
            args = [str(log_path), url, NODE, str(token_file), str(append), "12"]
            return [sys.executable, "-m", child, *args]

        async with await anyio.open_process(argv(200), cwd=REPO) as first:
            with anyio.fail_after(30):
                assert await _lines_until(first, "outbox: posting", 4) >= 4
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        partial = len(await cp.events())
        async with await anyio.open_process(argv(40), cwd=REPO) as second:
            assert second.stdout is not None
            assert second.stderr is not None
            errors = second.stderr
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_drain, errors)
                    out = b""
                    async for chunk in second.stdout:
                        out += chunk
                assert await second.wait() == 0
            assert b"DONE" in out
        stored = await cp.events()
        assert_stored_in_order(cp)
    async with EventLog.open(log_path) as log:
        expected = await expected_events(log, ["s-a", "s-b", "s-c"])
        assert sum(log.heads().values()) == 240
    assert 0 < partial < len(expected)  # killed midway, with work left for the restart
    assert stored_events(stored) == expected
