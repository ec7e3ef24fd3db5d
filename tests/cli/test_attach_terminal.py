"""`vm-agent attach --terminal` as a real process on a real PTY against a real daemon:
raw keys in, the window's size (and SIGWINCH) out, Ctrl-] detaches, attaching again paints
the screen, and it ends when the shell does."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import anyio
import pytest

from tests.server.harness import Daemon, daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


class Pty:
    """The attach process's terminal: we are the person at the keyboard."""

    def __init__(self, cols: int, rows: int) -> None:
        self.master, self.slave = os.openpty()
        os.set_blocking(self.master, False)
        self.resize(cols, rows)
        self.seen = b""

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    async def until(self, pattern: bytes, within_s: float = 20) -> re.Match[bytes]:
        with anyio.move_on_after(within_s):
            while (found := re.search(pattern, self.seen)) is None:
                await anyio.wait_readable(self.master)
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    await anyio.sleep(0.01)
        assert found is not None, self.seen
        return found


def _attach(d: Daemon, pty: Pty, sid: str, terminal: str | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "vm_agent", "attach", "--url", d.url, "--session", sid]
    argv += ["--terminal"] + ([terminal] if terminal else [])
    env = {**os.environ, "VM_AGENT_TOKEN": d.token()}
    return subprocess.Popen(
        argv, stdin=pty.slave, stdout=pty.slave, stderr=pty.slave, env=env, start_new_session=True
    )


async def _exit_code(proc: subprocess.Popen[bytes], within_s: float = 20) -> int:
    with anyio.fail_after(within_s):
        while proc.poll() is None:
            await anyio.sleep(0.02)
    return proc.returncode


async def _resized_to(d: Daemon, sid: str, cols: int, rows: int) -> None:
    with anyio.fail_after(20):
        while True:
            await d.log.flush()
            events = await d.log.read(sid, 0, 10_000)
            if any(
                e.type == "terminal.resized" and (e.data["cols"], e.data["rows"]) == (cols, rows)
                for e in events
            ):
                return
            await anyio.sleep(0.02)


async def test_attach_detach_and_attach_again(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer() as v:
        sid = (await d.start(v, "echo"))["session_id"]
        pty = Pty(90, 20)
        first = _attach(d, pty, sid, None)
        try:
            await pty.until(rb"\x1b\[H\x1b\[2J")  # attached: the (blank) screen is painted
            pty.type(b"stty size; echo at-$((5+5))\r")
            await pty.until(rb"20 90\r\n")
            await pty.until(rb"at-10")
            pty.resize(70, 15)
            first.send_signal(signal.SIGWINCH)
            await _resized_to(d, sid, 70, 15)
            pty.type(b"stty size\r")
            await pty.until(rb"15 70\r\n")
            pty.type(b"clear; echo mark-$((7*7))\r")
            await pty.until(rb"mark-49")
            pty.type(b"\x1d")  # Ctrl-]
            assert await _exit_code(first) == 0
            tid = (await pty.until(rb"attach again with --terminal (pty-[0-9a-f]+)"))[1].decode()
        finally:
            if first.poll() is None:
                first.kill()
        listed = await v.call("terminal/list", {"session_id": sid})
        assert [t["terminal_id"] for t in listed["terminals"]] == [tid]

        pty.seen = b""
        again = _attach(d, pty, sid, tid)
        try:
            await pty.until(rb"\x1b\[H\x1b\[2Jmark-49")  # the screen, from the snapshot
            pty.type(b"exit 3\r")
            assert await _exit_code(again) == 0
            await pty.until(rb"the terminal ended \(exited\)")
        finally:
            if again.poll() is None:
                again.kill()
        listed = await v.call("terminal/list", {"session_id": sid})
        assert listed["terminals"] == []
