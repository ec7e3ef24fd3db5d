"""Where the daemon puts session cgroups, and the cgroupfs parsers (pure)."""

from __future__ import annotations

from pathlib import Path
from pathlib import PurePosixPath as P

import pytest

from vm_agent.containment.cgroupfs import (
    parse_cgroup2_mount,
    parse_keyed,
    parse_own_cgroup,
)
from vm_agent.containment.cgroups import Layout, plan_layout, stale_names

UNIT = P("/system.slice/vm-agent.service")


@pytest.mark.parametrize(
    ("own", "procs", "layout"),
    [
        # Under systemd with Delegate=yes: alone in the unit's cgroup.
        (
            UNIT,
            [42],
            Layout(UNIT / "daemon", (UNIT, UNIT / "sessions"), UNIT / "sessions", True),
        ),
        # Restarted, the previous daemon's leaf empty: the same.
        (UNIT, [], Layout(UNIT / "daemon", (UNIT, UNIT / "sessions"), UNIT / "sessions", True)),
        # Sharing a cgroup (a login shell, a test runner): a subtree of its own beside.
        (
            P("/user.slice/session-3.scope"),
            [42, 7],
            Layout(
                None,
                (P("/user.slice/session-3.scope"), P("/user.slice/session-3.scope/vm-agent-42-0")),
                P("/user.slice/session-3.scope/vm-agent-42-0"),
                False,
            ),
        ),
        # The root of a hierarchy (this development machine, a container): never moved.
        (P("/"), [42], Layout(None, (P("/"), P("/vm-agent-42-0")), P("/vm-agent-42-0"), False)),
    ],
)
def test_plan_layout(own: P, procs: list[int], layout: Layout) -> None:
    assert plan_layout(own, procs, 42, 0) == layout


def test_stale_names() -> None:
    names = ["vm-agent-10-0", "vm-agent-11-3", "vm-agent-42-1", "other", "vm-agent-x-1", "init"]
    assert stale_names(names, live_pids={11}, me=42) == ["vm-agent-10-0"]


def test_parse_own_cgroup() -> None:
    hybrid = "9:name=systemd:/\n4:memory:/x\n0::/\n"
    assert parse_own_cgroup(hybrid) == P("/")
    assert parse_own_cgroup("0::/system.slice/vm-agent.service\n") == UNIT
    assert parse_own_cgroup("4:memory:/x\n") is None  # v1 only


MOUNTINFO = (
    "25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
    "40 25 0:35 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    "45 25 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
)


def test_parse_cgroup2_mount_and_dir_of() -> None:
    mount = parse_cgroup2_mount(MOUNTINFO)
    assert mount is not None and mount.mount_point == Path("/sys/fs/cgroup/unified")
    assert mount.dir_of(P("/")) == Path("/sys/fs/cgroup/unified")
    assert mount.dir_of(UNIT) == Path("/sys/fs/cgroup/unified/system.slice/vm-agent.service")
    nested = parse_cgroup2_mount("50 1 0:40 /ns /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n")
    assert nested is not None and nested.mount_point == Path("/mnt/my cg")
    assert nested.dir_of(P("/ns/a")) == Path("/mnt/my cg/a")
    assert nested.dir_of(P("/elsewhere")) is None
    assert parse_cgroup2_mount("25 30 0:22 / /x rw - tmpfs tmpfs rw\n") is None


def test_parse_keyed() -> None:
    text = "low 0\nhigh 3\nmax 10\noom 2\noom_kill 1\nbogus\n"
    assert parse_keyed(text) == {"low": 0, "high": 3, "max": 10, "oom": 2, "oom_kill": 1}
