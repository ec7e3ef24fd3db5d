"""Stopping a whole tree of processes: a process group, or (``containment``) a cgroup.

``ProcessTree`` is what a stop needs of either: who is alive, send a signal to all, kill
all. ``PgidTree`` is the fallback: processes spawned with ``start_new_session=True`` lead
their own group (pid = pgid), which a descendant calling ``setsid`` leaves; a cgroup it
cannot leave. Zombies are not counted as members: PID 1 on a VM may be slow to reap
orphans, and a zombie cannot run or hold anything but its pid.
"""

from __future__ import annotations

import logging
import os
import signal as signals
from contextlib import suppress
from pathlib import Path
from typing import Protocol

import anyio
from anyio.abc import Process

from vm_agent.process import oom

log = logging.getLogger(__name__)

_PROC = Path("/proc")
# How long to wait for a SIGKILLed group to disappear before reporting survivors.
_KILL_WAIT_S = 5.0
_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.1


def _stat_fields(pid_dir: Path) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        raw = (pid_dir / "stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    end = raw.rfind(b")")
    if end < 0:
        return None
    return raw[end + 2 :].decode("ascii", "replace").split()


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes whose process group is ``pgid``."""
    members: list[int] = []
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return members
    for entry in entries:
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry)
        # fields: state, ppid, pgrp, ...
        if fields is None or len(fields) < 3:
            continue
        if fields[0] in ("Z", "X"):
            continue
        if fields[2] == str(pgid):
            members.append(int(entry.name))
    return sorted(members)


def group_alive(pgid: int) -> bool:
    """True while at least one live process remains in the group."""
    return bool(group_members(pgid))


def signal_group(pgid: int, sig: int) -> bool:
    """Sends ``sig`` to the whole group; False if the group is gone or not ours to signal."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not permitted to signal process group %d", pgid)
        return False
    return True


class ProcessTree(Protocol):
    """The processes a spawn started and everything they started in turn."""

    def alive(self) -> bool: ...
    def members(self) -> list[int]: ...
    def signal(self, sig: int) -> bool: ...
    def kill(self) -> None: ...
    def oom_kills(self) -> int | None:
        """The OOM-kill counter that covers the tree, or None if the platform does not tell."""
        ...


class PgidTree:
    """A process group (the leader's pid is the pgid)."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid

    def __str__(self) -> str:
        return f"process group {self.pgid}"

    def alive(self) -> bool:
        return group_alive(self.pgid)

    def members(self) -> list[int]:
        return group_members(self.pgid)

    def signal(self, sig: int) -> bool:
        return signal_group(self.pgid, sig)

    def kill(self) -> None:
        signal_group(self.pgid, signals.SIGKILL)

    def oom_kills(self) -> int | None:
        return oom.oom_kill_count()


async def _sleep_poll(delay: float) -> float:
    await anyio.sleep(delay)
    return min(delay * 2, _POLL_MAX_S)


async def wait_group_gone(process: Process, pgid: int) -> None:
    """Returns once the leader is reaped and no live member remains (polls /proc)."""
    await wait_tree_gone(process, PgidTree(pgid))


async def wait_tree_gone(process: Process, tree: ProcessTree) -> None:
    await process.wait()
    delay = _POLL_FIRST_S
    while tree.alive():
        delay = await _sleep_poll(delay)


def _leader_exited(process: Process) -> bool:
    return process.returncode is not None


async def stop_process_group(
    process: Process,
    pgid: int,
    *,
    close_stdin: bool,
    stdin_grace_s: float,
    term_grace_s: float,
) -> None:
    """Close stdin, wait, SIGTERM the group, wait, SIGKILL the group, wait until it is gone.

    Safe to call when the process already exited (grandchildren may still be running) and
    while another task awaits ``process.wait()``.
    """
    await stop_tree(
        process,
        PgidTree(pgid),
        close_stdin=close_stdin,
        stdin_grace_s=stdin_grace_s,
        term_grace_s=term_grace_s,
    )


async def stop_tree(
    process: Process,
    tree: ProcessTree,
    *,
    close_stdin: bool,
    stdin_grace_s: float,
    term_grace_s: float,
) -> None:
    """``stop_process_group`` for any ``ProcessTree``."""
    if close_stdin and process.stdin is not None:
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await process.stdin.aclose()
        with anyio.move_on_after(stdin_grace_s):
            await process.wait()

    if _leader_exited(process) and not tree.alive():
        await process.wait()  # reaped already; returns at once
        return

    tree.signal(signals.SIGTERM)
    with anyio.move_on_after(term_grace_s):
        await wait_tree_gone(process, tree)
        return

    log.info("%s outlived SIGTERM by %.1fs; sending SIGKILL", tree, term_grace_s)
    tree.kill()
    with anyio.move_on_after(_KILL_WAIT_S):
        await wait_tree_gone(process, tree)
        return
    log.error("%s still has live members after SIGKILL: %s", tree, tree.members())
