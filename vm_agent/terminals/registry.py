"""The daemon's people's terminals, by session; each ends with its session.

A terminal is owned by a task in the task group the caller names (the viewer server's,
which outlives viewers: a terminal outlives the viewer that opened it, and any viewer of
the session may watch, type into or close it). That task also waits for the session's
end (``stopped``) and closes the terminal then.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from vm_agent.eventlog import EventLog
from vm_agent.process.launch import Launcher, PlainLauncher
from vm_agent.terminals.pty import Bounds, Terminal

log = logging.getLogger(__name__)

MAX_PER_SESSION = 8
_PATH = "/usr/local/bin:/usr/bin:/bin"


class TerminalRefused(ValueError):
    """The message says why, for the viewer."""


@dataclass(frozen=True, slots=True)
class Where:
    """Where and as whom a session's terminal runs."""

    session_id: str
    cwd: Path
    launcher: Launcher | None  # the session's containment, or None: the daemon's user
    env: Mapping[str, str]  # the agent user's HOME and names already in
    owner_ids: tuple[int, int] | None  # (uid, gid) the PTY is handed to
    stopped: anyio.Event  # set when the session's life in this daemon is over


def default_shell() -> list[str]:
    for candidate in ("/bin/bash", "/bin/sh"):
        if os.access(candidate, os.X_OK):
            return [candidate]
    found = shutil.which("sh")
    return [found or "/bin/sh"]


def terminal_env(base: Mapping[str, str], shell: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k in ("PATH", "HOME", "USER", "LOGNAME", "LANG")}
    env.setdefault("PATH", _PATH)
    env.setdefault("LANG", "C.UTF-8")
    env.update({"TERM": "xterm-256color", "SHELL": shell})
    return env


class TerminalRegistry:
    def __init__(self, log: EventLog, bounds: Bounds | None = None) -> None:
        self.log = log
        self.bounds = bounds or Bounds()
        self._terms: dict[str, dict[str, Terminal]] = {}

    def of(self, session_id: str) -> dict[str, Terminal]:
        return self._terms.get(session_id, {})

    def get(self, session_id: str, terminal_id: str) -> Terminal:
        term = self.of(session_id).get(terminal_id)
        if term is None:
            raise TerminalRefused(f"no open terminal {terminal_id!r} in this session")
        return term

    async def open(
        self, tg: TaskGroup, where: Where, *, cols: int, rows: int, opened_by: str
    ) -> Terminal:
        if where.stopped.is_set():
            raise TerminalRefused("the session has ended")
        mine = self._terms.setdefault(where.session_id, {})
        if len(mine) >= MAX_PER_SESSION:
            raise TerminalRefused(f"this session has {MAX_PER_SESSION} terminals open; close one")
        term = Terminal(
            session_id=where.session_id,
            terminal_id=f"pty-{secrets.token_hex(6)}",
            log=self.log,
            cols=cols,
            rows=rows,
            bounds=self.bounds,
        )
        shell = default_shell()
        mine[term.terminal_id] = term  # counted while it starts
        try:
            await term.start(
                where.launcher or PlainLauncher(),
                shell=shell,
                cwd=where.cwd,
                env=terminal_env(where.env, shell[0]),
                owner_ids=where.owner_ids,
                opened_by=opened_by,
            )
        except OSError as exc:
            del mine[term.terminal_id]
            raise TerminalRefused(f"cannot start a shell: {exc.strerror or exc}") from None
        except BaseException:
            del mine[term.terminal_id]
            raise
        tg.start_soon(self._own, where, term)
        log.info(
            "session %s: terminal %s opened by %s", where.session_id, term.terminal_id, opened_by
        )
        return term

    async def _own(self, where: Where, term: Terminal) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def end_with_session() -> None:
                    await where.stopped.wait()
                    await term.close()

                tg.start_soon(end_with_session)
                await term.run()
                tg.cancel_scope.cancel()
        finally:
            self._terms.get(where.session_id, {}).pop(term.terminal_id, None)

    def describe(self, session_id: str) -> list[dict[str, Any]]:
        return [
            {"terminal_id": t.terminal_id, "cols": t.cols, "rows": t.rows}
            for t in self.of(session_id).values()
        ]
