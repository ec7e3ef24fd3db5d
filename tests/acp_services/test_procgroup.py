"""Process-group stop escalation with real processes."""

from __future__ import annotations

import signal
import subprocess
import sys

import anyio
import pytest

from vm_agent.process import procgroup

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def _spawn(argv: list[str]) -> anyio.abc.Process:
    return await anyio.open_process(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def _wait_for_line(process: anyio.abc.Process) -> bytes:
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(10):
        while b"\n" not in data:
            data += await process.stdout.receive()
    return data


async def test_exits_on_stdin_close_without_signals() -> None:
    process = await _spawn(["cat"])
    assert procgroup.group_alive(process.pid)
    await procgroup.stop_process_group(
        process, process.pid, close_stdin=True, stdin_grace_s=10, term_grace_s=10
    )
    assert process.returncode == 0  # cat saw EOF and exited by itself
    assert not procgroup.group_alive(process.pid)
    await process.aclose()


async def test_sigterm_stops_a_process_that_ignores_stdin() -> None:
    process = await _spawn(["sleep", "1000"])
    await procgroup.stop_process_group(
        process, process.pid, close_stdin=True, stdin_grace_s=0.1, term_grace_s=10
    )
    assert process.returncode == -signal.SIGTERM
    assert not procgroup.group_alive(process.pid)
    await process.aclose()


async def test_sigkill_when_the_group_ignores_sigterm() -> None:
    # The shell and its sleeping child both ignore SIGTERM (an ignored signal is inherited).
    script = 'trap "" TERM; sleep 1000 & echo ready; wait'
    process = await _spawn(["sh", "-c", script])
    await _wait_for_line(process)
    assert len(procgroup.group_members(process.pid)) == 2
    await procgroup.stop_process_group(
        process, process.pid, close_stdin=True, stdin_grace_s=0.1, term_grace_s=0.3
    )
    assert process.returncode == -signal.SIGKILL
    assert not procgroup.group_alive(process.pid)
    await process.aclose()


async def test_grandchild_outliving_its_leader_is_stopped() -> None:
    # The leader exits at once on stdin close; its background child ignores SIGTERM.
    script = '(trap "" TERM; exec sleep 1000) & echo ready; read line; exit 0'
    process = await _spawn(["sh", "-c", script])
    await _wait_for_line(process)
    await procgroup.stop_process_group(
        process, process.pid, close_stdin=True, stdin_grace_s=10, term_grace_s=0.3
    )
    assert process.returncode == 0
    assert not procgroup.group_alive(process.pid)
    await process.aclose()


async def test_zombies_are_not_members() -> None:
    # The child exits at once; its parent never reaps it, so it stays a zombie.
    code = (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "print(pid, flush=True)\n"
        "time.sleep(1000)\n"
    )
    process = await _spawn([sys.executable, "-c", code])
    try:
        child = int(await _wait_for_line(process))
        assert procgroup.group_members(process.pid) == [process.pid]
        assert child not in procgroup.group_members(process.pid)
    finally:
        await procgroup.stop_process_group(
            process, process.pid, close_stdin=True, stdin_grace_s=0, term_grace_s=5
        )
        await process.aclose()
    assert not procgroup.group_alive(process.pid)


def test_signal_group_of_a_missing_group_is_false() -> None:
    assert procgroup.signal_group(2**22 + 12345, signal.SIGTERM) is False
    assert procgroup.group_members(2**22 + 12345) == []
