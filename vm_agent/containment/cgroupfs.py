"""cgroup v2 through its filesystem: where the hierarchy is, and one directory's files.

The parsers are pure; ``CgroupDir`` is the thin shell over one cgroup directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


def parse_own_cgroup(text: str) -> PurePosixPath | None:
    """The unified-hierarchy path in ``/proc/self/cgroup`` (the ``0::`` line)."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return PurePosixPath(line[3:] or "/")
    return None


@dataclass(frozen=True, slots=True)
class Cgroup2Mount:
    mount_point: Path
    root: PurePosixPath  # which cgroup the mount shows at its top (a namespace's own root)

    def dir_of(self, cgroup: PurePosixPath) -> Path | None:
        """The directory of ``cgroup``, or None if this mount does not show it."""
        if cgroup == self.root:
            return self.mount_point
        if self.root not in cgroup.parents:
            return None
        return self.mount_point / cgroup.relative_to(self.root)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field) >= i + 4 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_cgroup2_mount(mountinfo: str) -> Cgroup2Mount | None:
    """The first cgroup2 mount in ``/proc/self/mountinfo``."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and tail and tail[0] == "cgroup2":
            return Cgroup2Mount(Path(_unescape(fields[4])), PurePosixPath(_unescape(fields[3])))
    return None


def parse_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (``memory.events``, ``cgroup.events``, ``cpu.stat``)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


class CgroupDir:
    """One cgroup directory. Methods raise ``OSError`` as the filesystem does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"CgroupDir({str(self.path)!r})"

    def child(self, name: str) -> CgroupDir:
        return CgroupDir(self.path / name)

    def make(self) -> CgroupDir:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.path)
        return self

    def exists(self) -> bool:
        return (self.path / "cgroup.procs").exists()

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def write(self, name: str, value: str) -> None:
        # One write(2) per value: cgroupfs takes each write as one command.
        fd = os.open(self.path / name, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def keyed(self, name: str) -> dict[str, int]:
        return parse_keyed(self.read(name))

    def procs(self) -> list[int]:
        return [int(x) for x in self.read("cgroup.procs").split()]

    def add(self, pid: int) -> None:
        self.write("cgroup.procs", str(pid))

    def controllers(self) -> frozenset[str]:
        return frozenset(self.read("cgroup.controllers").split())

    def subtree_control(self) -> frozenset[str]:
        return frozenset(self.read("cgroup.subtree_control").split())

    def enable(self, wanted: frozenset[str]) -> frozenset[str]:
        """Enables what it can of ``wanted`` for the children; returns what is enabled."""
        for name in sorted(wanted & self.controllers() - self.subtree_control()):
            with contextlib.suppress(OSError):
                self.write("cgroup.subtree_control", f"+{name}")
        return self.subtree_control() & wanted

    def populated(self) -> bool:
        try:
            return self.keyed("cgroup.events").get("populated", 0) == 1
        except FileNotFoundError:
            return False

    def children(self) -> list[CgroupDir]:
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        return [CgroupDir(Path(e.path)) for e in entries if e.is_dir(follow_symlinks=False)]

    def walk(self) -> Iterator[CgroupDir]:
        """This cgroup and every descendant, deepest first."""
        for child in self.children():
            yield from child.walk()
        yield self

    def signal_all(self, sig: int) -> int:
        """Sends ``sig`` to every process of this cgroup and its descendants; how many."""
        sent = 0
        for cg in self.walk():
            try:
                pids = cg.procs()
            except FileNotFoundError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    sent += 1
        return sent

    def kill(self) -> None:
        """SIGKILL to every process in the subtree (``cgroup.kill``, Linux 5.14+)."""
        try:
            self.write("cgroup.kill", "1")
        except FileNotFoundError:
            if not self.exists():
                return
            # An older kernel: freeze, so nothing forks while we kill, then thaw.
            frozen = (self.path / "cgroup.freeze").exists()
            if frozen:
                self.write("cgroup.freeze", "1")
            try:
                self.signal_all(signal.SIGKILL)
            finally:
                if frozen:
                    self.write("cgroup.freeze", "0")

    def remove_tree(self) -> bool:
        """rmdir of every (empty) cgroup in the subtree; False if one still has processes."""
        clean = True
        for cg in self.walk():
            try:
                os.rmdir(cg.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                clean = False
        return clean
