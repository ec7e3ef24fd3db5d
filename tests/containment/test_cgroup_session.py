"""A session's cgroup for real (where this machine has a writable cgroup v2): the gate puts
a process in before it runs, a leaf's kill takes every descendant, OOM kills are read from
the session's own memory.events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.containment.harness import alive, gone
from tests.containment.pool import require_cgroup_v2, require_root
from vm_agent.containment.cgroupfs import CgroupDir
from vm_agent.containment.cgroups import CgroupTree, cgroup_path_of
from vm_agent.containment.limits import Limits
from vm_agent.containment.session import CgroupLeafTree, SessionContainment
from vm_agent.process.procgroup import stop_tree

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

_FORK_AND_REPORT = (
    "import os, sys, time\n"
    "print([x for x in open('/proc/self/cgroup') if x.startswith('0::')][0].strip(), flush=True)\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    print(os.getpid(), flush=True)\n"
    "    time.sleep(600)\n"
    "time.sleep(600)\n"
)


async def _lines(process: anyio.abc.Process, n: int) -> list[str]:
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(30):
        while data.count(b"\n") < n:
            data += await process.stdout.receive()
    return data.decode().splitlines()


async def test_the_gate_and_the_leaf_kill(tmp_path: Path) -> None:
    require_root()
    require_cgroup_v2()
    tree = CgroupTree.setup()
    try:
        session_cg = tree.session("t-gate").make()
        contained = SessionContainment(
            session_id="t-gate",
            user=None,
            limits=Limits(None, None, None, None),
            workdir=tmp_path,
            cgroup=session_cg,
        )
        launched = await contained.launch(
            [sys.executable, "-c", _FORK_AND_REPORT],
            leaf="agent",
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            stdin_pipe=True,
            stderr=subprocess.DEVNULL,
        )
        first, grandchild = await _lines(launched.process, 2)
        # Its very first instruction already ran inside the leaf.
        assert launched.leaf.startswith("agent-")
        assert first.endswith(f"/{session_cg.path.name}/{launched.leaf}")
        pid = int(grandchild)
        assert cgroup_path_of(pid) == session_cg.path / launched.leaf
        assert sorted(launched.tree.members()) == sorted([launched.process.pid, pid])
        # SIGTERM is ignored by neither here, but the grandchild left the process group:
        # the leaf's stop still ends it.
        await stop_tree(
            launched.process, launched.tree, close_stdin=True, stdin_grace_s=0.1, term_grace_s=2
        )
        assert await gone(pid)
        assert not launched.tree.alive()
        await launched.process.aclose()
        await contained.release()
        assert not session_cg.path.exists()
    finally:
        tree.close()
    assert not tree.base.path.exists()


async def test_a_missing_program_fails_before_the_gate(tmp_path: Path) -> None:
    require_root()
    require_cgroup_v2()
    tree = CgroupTree.setup()
    try:
        contained = SessionContainment(
            session_id="t-missing",
            user=None,
            limits=Limits(None, None, None, None),
            workdir=tmp_path,
            cgroup=tree.session("t-missing").make(),
        )
        with pytest.raises(FileNotFoundError):
            await contained.launch(
                ["no-such-agent-binary"],
                leaf="agent",
                cwd=tmp_path,
                env={"PATH": "/usr/bin:/bin"},
                stdin_pipe=True,
                stderr=subprocess.DEVNULL,
            )
        await contained.release()
    finally:
        tree.close()


def test_oom_kills_come_from_the_sessions_own_memory_events(tmp_path: Path) -> None:
    session, leaf = tmp_path / "session", tmp_path / "session" / "agent"
    leaf.mkdir(parents=True)
    tree = CgroupLeafTree(CgroupDir(leaf), CgroupDir(session))
    assert tree.oom_kills() is None  # no memory controller: unknown, not "no"
    (session / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert tree.oom_kills() == 1


def test_stale_trees_of_dead_daemons_are_removed() -> None:
    require_root()
    require_cgroup_v2()
    own = cgroup_path_of(os.getpid())
    assert own is not None
    dead = 2**22 + 4321  # above pid_max here: never a live process
    stale = CgroupDir(own / f"vm-agent-{dead}-0").make()
    stale.child("session-x").make()
    tree = CgroupTree.setup()
    try:
        assert not stale.path.exists()
    finally:
        tree.close()
    assert alive(os.getpid())
