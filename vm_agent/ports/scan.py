"""Which listening ports belong to a session: the sockets its cgroup's processes hold open,
or (without cgroups) the ones its agent user owns."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from vm_agent.containment.session import SessionContainment
from vm_agent.ports.procnet import Listening, parse

_PROC = Path("/proc")


def listening() -> list[Listening]:
    found: list[Listening] = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            found += parse((_PROC / "net" / name).read_text())
    return found


def socket_inodes(pids: Iterable[int]) -> set[int]:
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = _PROC / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for name in names:
            try:
                target = os.readlink(fd_dir / name)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def session_pids(contained: SessionContainment) -> list[int] | None:
    """Every process of the session's cgroup; None without one."""
    cgroup = contained.cgroup
    if cgroup is None or not cgroup.exists():
        return None
    pids: list[int] = []
    for cg in cgroup.walk():
        with contextlib.suppress(OSError):
            pids += cg.procs()
    return pids


def ports_of(
    contained: SessionContainment | None, sockets: list[Listening] | None = None
) -> tuple[list[dict[str, object]], str | None]:
    """The session's listening ports and how they were told apart (``cgroup``, ``uid``), or
    ``([], None)`` when they cannot be (no cgroup and the agents run as the daemon).
    ``sockets``: the node's listening sockets, when a scan of every session read them once."""
    if contained is None:
        return [], None
    pids = session_pids(contained)
    if sockets is None:
        sockets = listening()
    if pids is not None:
        mine = socket_inodes(pids)
        chosen = [s for s in sockets if s.inode in mine]
        by = "cgroup"
    elif contained.user is not None:
        chosen = [s for s in sockets if s.uid == contained.user.uid]
        by = "uid"
    else:
        return [], None
    unique = sorted({(s.port, s.address) for s in chosen})
    return [{"port": port, "address": address} for port, address in unique], by
