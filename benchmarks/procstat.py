"""What /proc says about a process: resident memory, CPU time, children; exit via pidfd."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """VmRSS of one process (its children are not counted)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not of its children), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from every thread's children list)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def wait_exit(pid: int, timeout_s: float) -> float | None:
    """Blocks until `pid` dies; returns time.time() as the kernel reported it, or None.

    Uses a pidfd, so it works for a process that is not our child (an agent of the daemon).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return time.time() if ready else None
    finally:
        os.close(fd)
