"""Process trees from /proc: who descends from whom, and who of them still lives.

An agent's process group is not the whole story: a wrapper's native binary, a shell a
tool started, anything that called setsid() is in the tree but maybe not in the group.
Snapshots are (pid, start time) pairs, so a pid the kernel hands out again is not taken
for a survivor. Zombies are not counted: they hold nothing but a pid.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

_PROC = Path("/proc")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks), or None when the process is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _table() -> dict[int, tuple[str, int, int]]:
    table = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                table[int(entry.name)] = stat
    return table


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root`` (not ``root`` itself): pid -> start time."""
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        state, _, start = table[pid]
        if state not in ("Z", "X"):
            found[pid] = start
        todo.extend(children.get(pid, []))
    return found


def survivors(snapshot: Mapping[int, int]) -> list[int]:
    """The pids of ``snapshot`` still alive as the same processes (not zombies)."""
    alive = []
    for pid, start in snapshot.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == start and stat[0] not in ("Z", "X"):
            alive.append(pid)
    return sorted(alive)


def command_line(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def with_variable(name: str, value: str) -> list[int]:
    """Live processes whose environment has ``name=value`` (root reads every environ).

    Descendants inherit their environment: a HOME given to one agent alone finds every
    process it started, even one that left its process group and its parent.
    """
    needle = f"{name}={value}".encode()
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[0] not in ("Z", "X") and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


@asynccontextmanager
async def child_process(argv: Sequence[str], **kw: Any) -> AsyncIterator[Process]:
    """A subprocess for the block; killed and reaped on the way out if still running."""
    process = await anyio.open_process(list(argv), **kw)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()


async def stopped_by(process: Process, signum: signal.Signals, within_s: float = 60) -> int:
    """Sends ``signum`` and waits for the exit status (a generous bound, not a timing)."""
    process.send_signal(signum)
    with anyio.fail_after(within_s):
        return await process.wait()
