"""A hostile agent, run contained as the daemon would run it, tries each attack of issue 14.

Real pool users (root; CI runs as root), a real session cgroup, real fake-agent processes.
Every attempt to reach the daemon's secrets, another owner's files, or outside the
session's root is refused; descendants that call setsid die with their session or terminal.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.containment.harness import (
    SECRET_VAR,
    alive,
    contained,
    gone,
    hostile_spec,
    refused_as,
)
from tests.containment.pool import TestPool, require_cgroup_v2, require_root
from vm_agent.containment.cgroups import cgroup_path_of

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


def _secret_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


async def test_every_attack_on_the_daemon_and_other_owners_is_refused(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    require_root()
    require_cgroup_v2()
    # The daemon's secrets where an agent could name them (only their modes protect them).
    token = _secret_file(agent_pool.base / "callback-token", "eyJ.token.sig\n")
    env_file = _secret_file(agent_pool.base / "env", f"{SECRET_VAR}=x\n")
    tls_key = _secret_file(agent_pool.base / "node-key.pem", "-----BEGIN PRIVATE KEY-----\n")
    try:
        async with contained(agent_pool, tmp_path, [hostile_spec()]) as c:
            bob = await c.ready("hostile", c.workspace("bob-proj"), owner="bob")
            alice = await c.ready("hostile", c.workspace("alice-proj"), owner="alice")
            assert alice.containment is not None and bob.containment is not None
            a_user, b_user = alice.containment.user, bob.containment.user
            assert a_user is not None and b_user is not None and a_user.uid != b_user.uid
            assert alice.describe()["owner"] == "alice"
            bob_file = c.workspace("bob-proj") / "bob.txt"
            bob_home_file = Path(str(b_user.home)) / "notes.txt"
            [made, made_home] = await c.attack(
                bob, [{"write": str(bob_file)}, {"write": str(bob_home_file)}]
            )
            assert made["ok"] and made_home["ok"], (made, made_home)

            me, a_cwd = os.getpid(), c.workspace("alice-proj")
            assert alice.agent_pid is not None and bob.agent_pid is not None
            a_cgroup = cgroup_path_of(alice.agent_pid)
            assert a_cgroup is not None
            (a_cwd / "lnk-bob").symlink_to(bob_file)
            (a_cwd / "lnk-state").symlink_to(c.state_dir)
            # Each attack with how it must be refused: the errno (a mistyped path would be
            # ENOENT) or the daemon's answer to an fs/* call.
            outside = "rpc -32602: "
            table: list[tuple[dict[str, Any], str]] = [
                ({"open": str(token)}, "EACCES"),
                ({"open": str(env_file)}, "EACCES"),
                ({"open": str(tls_key)}, "EACCES"),
                ({"open": str(c.state_dir / "events.sqlite3")}, "EACCES"),
                ({"list": str(c.state_dir)}, "EACCES"),
                ({"open": f"/proc/{me}/environ"}, "EACCES"),
                ({"open": f"/proc/{me}/mem"}, "EACCES"),
                ({"list": f"/proc/{me}/fd"}, "EACCES"),
                ({"list": f"/proc/{me}/cwd"}, "EACCES"),
                ({"signal": me}, "EPERM"),
                ({"signal": bob.agent_pid}, "EPERM"),
                ({"open": f"/proc/{bob.agent_pid}/environ"}, "EACCES"),
                ({"open": str(bob_file)}, "EACCES"),
                ({"list": str(c.workspace("bob-proj"))}, "EACCES"),
                ({"open": str(bob_home_file)}, "EACCES"),
                ({"list": str(b_user.home)}, "EACCES"),
                ({"fs_read": str(bob_file)}, f"{outside}{bob_file} is outside the allowed"),
                ({"fs_read": str(token)}, f"{outside}{token} is outside the allowed"),
                ({"fs_read": "/etc/shadow"}, f"{outside}/etc/shadow is outside the allowed"),
                ({"fs_read": str(a_cwd / "lnk-bob")}, f"{outside}{a_cwd / 'lnk-bob'} goes through"),
                (
                    {"fs_read": str(a_cwd / "lnk-state" / "events.sqlite3")},
                    f"{outside}{a_cwd / 'lnk-state' / 'events.sqlite3'} goes through",
                ),
                (
                    {"fs_write": str(a_cwd / "lnk-state" / "planted")},
                    f"{outside}{a_cwd / 'lnk-state' / 'planted'} goes through",
                ),
                ({"fs_write": f"{a_cwd}/../bob-proj/planted"}, f"{outside}{a_cwd}/../bob-proj"),
                # leave the session, or hand itself controllers
                ({"write": str(a_cgroup.parent.parent / "cgroup.procs")}, "EACCES"),
                ({"write": str(a_cgroup.parent / "cgroup.subtree_control")}, "EACCES"),
            ]
            # lift its own limits: the files exist only with their controller (here cgroup
            # v1 may hold them: then there is no limit to lift; the VM test has them all)
            for name in ("memory.max", "pids.max", "cpu.max"):
                if (a_cgroup.parent / name).exists():
                    table.append(({"write": str(a_cgroup.parent / name)}, "EACCES"))
            for attack, _ in table:
                target = next(iter(attack.values()))
                if "signal" not in attack and "fs_write" not in attack:
                    assert os.path.lexists(target), f"no such target: {attack}"
            results = await c.attack(alice, [attack for attack, _ in table])
            refused_as(results, [how for _, how in table])
            assert not (c.state_dir / "planted").exists()
            assert not (c.workspace("bob-proj") / "planted").exists()
            assert bob_file.read_text() == "hostile\n"

            [who] = await c.attack(alice, [{"whoami": True}])
            facts = json.loads(who["detail"])
            # No supplementary group of the daemon's (root's) survives.
            assert (facts["uid"], facts["gid"], facts["groups"]) == (a_user.uid, a_user.gid, [])
            assert facts["home"] == str(a_user.home)
            assert SECRET_VAR not in facts["env"] and "XDG_RUNTIME_DIR" not in facts["env"]
            assert facts["umask"] == "0077"
            # What the daemon made for them: the workspace is theirs and closed to others.
            st = a_cwd.stat()
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (a_user.uid, 0o700)

            # The same owner keeps its user (its HOME holds what session/load needs).
            again = await c.ready("hostile", c.workspace("alice-proj") / "sub", owner="alice")
            assert again.containment is not None and again.containment.user == a_user
    finally:
        for path in (token, env_file, tls_key):
            path.unlink()


async def test_setsid_descendants_die_with_the_session_and_the_terminal(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    require_root()
    require_cgroup_v2()
    async with contained(agent_pool, tmp_path, [hostile_spec()]) as c:
        session = await c.ready("hostile", c.workspace("setsid"), owner="carol")
        [daemonized, from_terminal] = await c.attack(
            session, [{"setsid": True}, {"terminal_setsid": True}]
        )
        assert daemonized["ok"] and from_terminal["ok"], (daemonized, from_terminal)
        pid, term_pid = int(daemonized["detail"]), int(from_terminal["detail"])
        # Released with its terminal (the prompt returns only after terminal/release).
        assert await gone(term_pid), f"terminal descendant {term_pid} outlived its release"
        assert alive(pid)
        assert os.getpgid(pid) != session.agent_pid  # it left the agent's process group
        await session.stop()
        assert await gone(pid), f"setsid descendant {pid} outlived the session's stop"


async def test_without_cgroups_a_setsid_descendant_outlives_the_stop(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    # The fallback's known limit (said at start): what the cgroup test above guards against.
    require_root()
    async with contained(agent_pool, tmp_path, [hostile_spec()], cgroups=False) as c:
        session = await c.ready("hostile", c.workspace("nocg"), owner="carol")
        [daemonized] = await c.attack(session, [{"setsid": True}])
        pid = int(daemonized["detail"])
        try:
            await session.stop()
            with anyio.fail_after(30):
                while session.agent_pid is not None:
                    await anyio.sleep(0.05)
            assert alive(pid)
        finally:
            os.kill(pid, signal.SIGKILL)
