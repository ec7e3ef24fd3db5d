"""The daemon's cgroup v2 subtree: where session cgroups go, and setting it up at start.

Under systemd (``Delegate=yes``) the daemon is alone in its unit's cgroup: it moves itself
into a leaf (``daemon``), so the unit's cgroup may enable controllers for ``sessions``,
under which each session gets a cgroup with its limits. Where the daemon shares its
cgroup (a login shell, a test runner, the root of a hierarchy), sessions go into a
``vm-agent-<pid>-<n>`` cgroup of its own beside it, and what a dead daemon left there is
killed and removed at the next start. ``plan_layout`` decides (pure); ``CgroupTree`` does.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vm_agent.containment.cgroupfs import CgroupDir, parse_cgroup2_mount, parse_own_cgroup

log = logging.getLogger(__name__)

WANTED = frozenset({"memory", "cpu", "pids"})
_OWN_NAME = re.compile(r"vm-agent-(\d+)-(\d+)")
_tags = itertools.count()


@dataclass(frozen=True, slots=True)
class Layout:
    daemon_leaf: PurePosixPath | None  # where the daemon moves itself, if anywhere
    enable_at: tuple[PurePosixPath, ...]  # top down: subtree_control gets the controllers
    base: PurePosixPath  # session cgroups are its children
    exclusive: bool  # the base is this daemon's alone across restarts


def plan_layout(own: PurePosixPath, own_procs: Sequence[int], pid: int, tag: int) -> Layout:
    root = PurePosixPath("/")
    if own != root and set(own_procs) <= {pid}:
        # Delegated to us alone (a systemd unit): leaf for the daemon, a subtree for sessions.
        base = own / "sessions"
        return Layout(own / "daemon", (own, base), base, exclusive=True)
    base = own / f"vm-agent-{pid}-{tag}"
    # The root of a hierarchy may hold processes and enable controllers at once; any other
    # shared cgroup cannot enable them while it holds processes (that attempt fails).
    return Layout(None, (own, base), base, exclusive=False)


def stale_names(names: Collection[str], live_pids: Collection[int], me: int) -> list[str]:
    """Sibling cgroups that daemons now dead left behind (``vm-agent-<pid>-<n>``)."""
    out = []
    for name in sorted(names):
        match = _OWN_NAME.fullmatch(name)
        if match and int(match[1]) != me and int(match[1]) not in live_pids:
            out.append(name)
    return out


class CgroupUnavailable(Exception):
    """No writable cgroup v2 hierarchy: the message says what is missing."""


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _live_pids() -> set[int]:
    return {int(e) for e in os.listdir("/proc") if e.isdigit()}


def _kill_and_remove(cg: CgroupDir, within_s: float = 2.0) -> None:
    """Kills the subtree and removes it once empty (waiting briefly: SIGKILL takes a moment)."""
    with contextlib.suppress(OSError):
        cg.kill()
    deadline = time.monotonic() + within_s
    while cg.populated() and time.monotonic() < deadline:
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        cg.remove_tree()


class CgroupTree:
    """The daemon's part of the hierarchy once set up: the base and its controllers."""

    def __init__(self, base: CgroupDir, controllers: frozenset[str], exclusive: bool) -> None:
        self.base = base
        self.controllers = controllers
        self.exclusive = exclusive

    @classmethod
    def setup(cls) -> CgroupTree:
        """Finds, claims and prepares the subtree; ``CgroupUnavailable`` when it cannot."""
        try:
            mount = parse_cgroup2_mount(_read("/proc/self/mountinfo"))
            own = parse_own_cgroup(_read("/proc/self/cgroup"))
        except OSError as exc:
            raise CgroupUnavailable(f"cannot read /proc/self: {exc.strerror}") from exc
        if mount is None:
            raise CgroupUnavailable("no cgroup2 filesystem is mounted")
        if own is None:
            raise CgroupUnavailable("this process is in no cgroup v2 (hybrid hierarchy)")
        own_dir = mount.dir_of(own)
        if own_dir is None or not os.access(own_dir, os.W_OK):
            raise CgroupUnavailable(f"the daemon's cgroup {own} is not writable")
        me = os.getpid()
        own_cg = CgroupDir(own_dir)
        layout = plan_layout(own, own_cg.procs(), me, next(_tags))

        def at(path: PurePosixPath) -> CgroupDir:
            found = mount.dir_of(path)
            assert found is not None
            return CgroupDir(found)

        try:
            if layout.daemon_leaf is not None:
                at(layout.daemon_leaf).make().add(me)
            if not layout.exclusive:
                for name in stale_names([c.path.name for c in own_cg.children()], _live_pids(), me):
                    log.warning("removing cgroup %s that a dead daemon left", own_dir / name)
                    _kill_and_remove(own_cg.child(name))
            base = at(layout.base).make()
        except OSError as exc:
            raise CgroupUnavailable(f"cannot set up cgroups under {own_dir}: {exc}") from exc
        if layout.exclusive:
            for stale in base.children():  # sessions of this unit's previous daemon
                log.warning("removing session cgroup %s left from before", stale.path)
                _kill_and_remove(stale)
        enabled = WANTED
        for path in layout.enable_at:
            try:
                enabled = at(path).enable(enabled)
            except OSError:
                enabled = frozenset()
        return cls(base, enabled, layout.exclusive)

    def session(self, session_id: str) -> CgroupDir:
        # Prefixed: a session id such as "memory.max" must not name an interface file.
        return self.base.child(f"session-{session_id}")

    def kill_all(self) -> None:
        """SIGKILL to everything under the base (the daemon is exiting the hard way)."""
        with contextlib.suppress(OSError):
            self.base.kill()

    def close(self) -> None:
        """Kills and removes every session cgroup (and the base, unless it is the unit's)."""
        for child in self.base.children():
            _kill_and_remove(child)
        if not self.exclusive:
            _kill_and_remove(self.base)


def cgroup_path_of(pid: int) -> Path | None:
    """Where a process is, as a directory (tests and diagnostics)."""
    try:
        mount = parse_cgroup2_mount(_read("/proc/self/mountinfo"))
        own = parse_own_cgroup(_read(f"/proc/{pid}/cgroup"))
    except OSError:
        return None
    if mount is None or own is None:
        return None
    return mount.dir_of(own)
