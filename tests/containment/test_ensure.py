"""`vm-agent agent-users ensure` against the real account database (root; CI is root)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containment.pool import TestPool
from tests.daemon.harness import base_env
from vm_agent.containment.ensure import ensure_pool, plan_for

pytestmark = pytest.mark.integration


def _cli(pool: TestPool, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**base_env(), **pool.env(), "VM_AGENT_ENV_FILE": "/nonexistent"}
    return subprocess.run(
        [sys.executable, "-m", "vm_agent", "agent-users", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_pool_is_as_contract_2_says(agent_pool: TestPool) -> None:
    homes = Path(str(agent_pool.spec.homes_dir))
    st = homes.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    for user in agent_pool.spec.users():
        entry = pwd.getpwnam(user.name)
        assert (entry.pw_uid, entry.pw_gid, entry.pw_dir) == (user.uid, user.gid, str(user.home))
        assert grp.getgrnam(user.name).gr_gid == user.gid
        assert entry.pw_shell in ("/bin/bash", "/bin/sh")
        home = Path(str(user.home)).stat()
        assert (home.st_uid, home.st_gid, stat.S_IMODE(home.st_mode)) == (
            user.uid,
            user.gid,
            0o700,
        )


def test_ensure_again_does_nothing(agent_pool: TestPool) -> None:
    assert plan_for(agent_pool.spec).done
    assert ensure_pool(agent_pool.spec).actions == ()
    done = _cli(agent_pool, "ensure")
    assert done.returncode == 0, done.stderr
    assert "all there already" in done.stdout
    check = _cli(agent_pool, "ensure", "--check")
    assert check.returncode == 0 and "all there" in check.stdout


def test_ensure_mends_a_missing_or_opened_home(agent_pool: TestPool) -> None:
    u1, u2 = agent_pool.spec.user(1), agent_pool.spec.user(2)
    shutil.rmtree(str(u1.home))
    os.chmod(str(u2.home), 0o755)
    check = _cli(agent_pool, "ensure", "--check")
    assert check.returncode == 1
    assert f"to do: create {u1.home}" in check.stdout
    assert f"to do: fix {u2.home}" in check.stdout
    done = _cli(agent_pool, "ensure")
    assert done.returncode == 0, done.stderr
    assert plan_for(agent_pool.spec).done
    assert stat.S_IMODE(os.stat(str(u2.home)).st_mode) == 0o700
    assert os.stat(str(u1.home)).st_uid == u1.uid


def test_a_conflict_changes_nothing(agent_pool: TestPool, tmp_path: Path) -> None:
    # A uid of the pool taken by a user of another name: refused, nothing created.
    spec = agent_pool.spec
    bigger = type(spec)(spec.count + 1, spec.uid_base - 1, spec.prefix + "x", spec.homes_dir)
    done = subprocess.run(
        [sys.executable, "-m", "vm_agent", "agent-users", "ensure"],
        env={
            **base_env(),
            **agent_pool.env(),
            "VM_AGENT_ENV_FILE": "/nonexistent",
            "VM_AGENT_AGENT_USERS": str(bigger.count),
            "VM_AGENT_AGENT_UID_BASE": str(bigger.uid_base),
            "VM_AGENT_AGENT_USER_PREFIX": bigger.prefix,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"uid {spec.uid_base} belongs to user {spec.user(0).name}" in done.stderr
    with pytest.raises(KeyError):
        pwd.getpwnam(bigger.user(0).name)
