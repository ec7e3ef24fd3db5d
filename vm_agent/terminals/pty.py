"""One person's shell in a real PTY, its output in the session's durable event log.

The shell starts through the session's ``Launcher`` (as the agent user, in a leaf cgroup
of the session's; without containment in a process group of its own), led by a small
``sh`` that opens the PTY's slave by name as the new session's leader, so it becomes the
shell's controlling terminal (job control, ^C) before the shell is exec'd. The daemon
keeps the master (and a slave descriptor, so the master never reads EIO before the shell
has opened it).

Output is read from the master, coalesced for ``coalesce_s`` (the viewer latency budget)
or up to ``max_event_bytes``, decoded as UTF-8 (a character split across reads waits for
its rest), appended as one ``terminal.output`` event, and fed to the screen emulator in
that order, so a snapshot names the seq it contains. A byte budget per second paces the
reader: a flood blocks the writing program on a full PTY instead of filling the log.
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import logging
import os
import signal as signals
import struct
import subprocess
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from vm_agent.eventlog import EventLog
from vm_agent.process import procgroup
from vm_agent.process.launch import Launched, Launcher
from vm_agent.terminals.budget import ByteBudget
from vm_agent.terminals.screen import Screen

log = logging.getLogger(__name__)

# Opens the slave as the session leader (so it is the controlling terminal), then the shell.
_LEADER = 'exec "$@" <>"$0" >&0 2>&0'
_READ = 65536


@dataclass(frozen=True, slots=True)
class Bounds:
    coalesce_s: float = 0.02  # output waits at most this long to be sent with more
    max_event_bytes: int = 32 * 1024
    output_rate: float = 256 * 1024  # bytes a second into the log, per terminal
    output_burst: float = 1024 * 1024
    input_rate: float = 64 * 1024
    input_burst: float = 64 * 1024
    max_input_bytes: int = 16 * 1024  # one terminal/input
    kill_grace_s: float = 1.0


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_now(fd: int, limit: int) -> bytes:
    """What the master has right now, up to ``limit`` (b"" when nothing or hung up)."""
    try:
        return os.read(fd, limit)
    except BlockingIOError:
        return b""
    except OSError as exc:
        if exc.errno == errno.EIO:  # no slave open any more
            return b""
        raise


class Terminal:
    def __init__(
        self,
        *,
        session_id: str,
        terminal_id: str,
        log: EventLog,
        cols: int,
        rows: int,
        bounds: Bounds,
    ) -> None:
        self.session_id = session_id
        self.terminal_id = terminal_id
        self.log = log
        self.bounds = bounds
        self.cols, self.rows = cols, rows
        self.screen = Screen(cols, rows)
        self.exit: dict[str, Any] | None = None
        self.ended = anyio.Event()
        self._out = ByteBudget(bounds.output_rate, bounds.output_burst)
        self._in = ByteBudget(bounds.input_rate, bounds.input_burst)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._master = -1
        self._slave = -1
        self._launched: Launched | None = None
        self._launcher: Launcher | None = None
        self._closing = False

    # -- start ------------------------------------------------------------------------------

    async def start(
        self,
        launcher: Launcher,
        *,
        shell: list[str],
        cwd: Path,
        env: Mapping[str, str],
        owner_ids: tuple[int, int] | None,
        opened_by: str,
    ) -> None:
        master, slave = os.openpty()
        self._master, self._slave = master, slave
        os.set_blocking(master, False)
        set_size(master, self.cols, self.rows)
        if owner_ids is not None:  # the agent user opens it by name, as its own terminal
            os.fchown(slave, *owner_ids)
        os.fchmod(slave, 0o600)
        tty = os.ttyname(slave)
        self._launcher = launcher
        try:
            launched = await launcher.launch(
                ["/bin/sh", "-c", _LEADER, tty, *shell],
                leaf=self.terminal_id,
                cwd=cwd,
                env=env,
                stdin_pipe=False,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            self._close_fds()
            raise
        self._launched = launched
        if launched.process.stdout is not None:
            await launched.process.stdout.aclose()  # its output goes to the PTY instead
        opened = await self.log.append(
            self.session_id,
            "terminal.opened",
            {
                "terminal_id": self.terminal_id,
                "cols": self.cols,
                "rows": self.rows,
                "shell": shell[0],
                "by": opened_by,
                "pid": launched.process.pid,
            },
        )
        self.screen.mark(opened.seq)  # the blank screen: what follows this event fills it

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    # -- life -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Pumps output until the shell ends (or ``close``), then records the end."""
        assert self._launched is not None
        process = self._launched.process
        returncode: int | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump)
                returncode = await process.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(returncode)

    async def _finish(self, returncode: int | None) -> None:
        assert self._launched is not None
        launched = self._launched
        await procgroup.stop_tree(
            launched.process,
            launched.tree,
            close_stdin=False,
            stdin_grace_s=0.0,
            term_grace_s=self.bounds.kill_grace_s,
        )
        await launched.process.aclose()
        # What the shell wrote before it ended is in the master still: keep it.
        tail = bytearray()
        while len(tail) < self.bounds.output_burst:
            chunk = _read_now(self._master, _READ)
            if not chunk:
                break
            tail += chunk
        await self._emit(bytes(tail), final=True)
        self._close_fds()
        if self._launcher is not None:
            self._launcher.forget(launched.leaf)
        code = launched.process.returncode if returncode is None else returncode
        self.exit = _exit_fields(code, closed=self._closing)
        await self.log.append(
            self.session_id, "terminal.exited", {"terminal_id": self.terminal_id, **self.exit}
        )
        self.ended.set()

    async def _pump(self) -> None:
        bounds = self.bounds
        while True:
            await anyio.wait_readable(self._master)
            buf = bytearray(_read_now(self._master, bounds.max_event_bytes))
            deadline = time.monotonic() + bounds.coalesce_s
            while len(buf) < bounds.max_event_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with anyio.move_on_after(left):
                    await anyio.wait_readable(self._master)
                    buf += _read_now(self._master, bounds.max_event_bytes - len(buf))
            if not buf:
                # Readable but nothing to read: the slave hung up for now; wait a little.
                await anyio.sleep(bounds.coalesce_s)
                continue
            with anyio.CancelScope(shield=True):
                await self._emit(bytes(buf), final=False)
            pause = self._out.wait_for(time.monotonic(), len(buf))
            if pause > 0:
                await anyio.sleep(pause)  # the budget's own pace, not a guess

    async def _emit(self, data: bytes, *, final: bool) -> None:
        text = self._decoder.decode(data, final=final)
        if not text:
            return
        event = await self.log.append(
            self.session_id, "terminal.output", {"terminal_id": self.terminal_id, "data": text}
        )
        self.screen.feed(text, event.seq)

    # -- what viewers do --------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        screen = await anyio.to_thread.run_sync(self.screen.snapshot)
        return {
            "terminal_id": self.terminal_id,
            "seq": screen.pop("seq"),
            "screen": screen,
            "exit": self.exit,
        }

    async def write(self, data: bytes) -> None:
        """Input; ``ValueError`` over the size or rate bound or after the end."""
        if self.exit is not None or self._master < 0:
            raise ValueError("the terminal has ended")
        if len(data) > self.bounds.max_input_bytes:
            raise ValueError(f"input is more than {self.bounds.max_input_bytes} bytes")
        if not self._in.take(time.monotonic(), len(data)):
            raise ValueError("input is coming faster than the terminal's budget; slow down")
        view = memoryview(data)
        with anyio.fail_after(5):
            while view:
                try:
                    view = view[os.write(self._master, view) :]
                except BlockingIOError:
                    await anyio.wait_writable(self._master)

    async def resize(self, cols: int, rows: int) -> None:
        if self.exit is not None or self._master < 0:
            raise ValueError("the terminal has ended")
        set_size(self._master, cols, rows)
        self.cols, self.rows = cols, rows
        await anyio.to_thread.run_sync(self.screen.resize, cols, rows)
        await self.log.append(
            self.session_id,
            "terminal.resized",
            {"terminal_id": self.terminal_id, "cols": cols, "rows": rows},
        )
        if self._launched is not None:  # the shell's whole foreground hears it
            self._launched.tree.signal(signals.SIGWINCH)

    async def close(self) -> None:
        """Ends the shell and everything it started; returns once the end is in the log."""
        self._closing = True
        if self._launched is not None and self.exit is None:
            self._launched.tree.signal(signals.SIGHUP)
            with anyio.move_on_after(self.bounds.kill_grace_s):
                await self.ended.wait()
            if not self.ended.is_set():
                self._launched.tree.kill()
        await self.ended.wait()


def _exit_fields(returncode: int | None, *, closed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"exit_code": None, "signal": None, "reason": "exited"}
    if returncode is not None and returncode >= 0:
        out["exit_code"] = returncode
    elif returncode is not None:
        try:
            out["signal"] = signals.Signals(-returncode).name
        except ValueError:
            out["signal"] = str(-returncode)
    if closed:
        out["reason"] = "closed"
    return out
