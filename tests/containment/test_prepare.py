"""Preparing a session's containment for real: the working directory, the owner's user."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from tests.containment.harness import limit_defaults
from tests.containment.pool import TestPool, require_root
from vm_agent.containment.host import Containment, ContainmentConfig
from vm_agent.containment.users import PoolExhausted

pytestmark = pytest.mark.anyio


@pytest.fixture
def ws(agent_pool: TestPool) -> Iterator[Path]:
    require_root()
    root = agent_pool.workspaces / "prep"
    root.mkdir(mode=0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def _containment(pool: TestPool, ws: Path, state: Path) -> Containment:
    state.mkdir(mode=0o700, exist_ok=True)
    return Containment.start(
        ContainmentConfig(
            state_dir=state,
            pool=pool.spec,
            workspace_roots=(PurePosixPath(ws),),
            protected=(state, ws / "daemon-files"),
            defaults=limit_defaults(),
            cgroups=False,
        )
    )


async def test_a_missing_workdir_is_made_for_the_user(
    agent_pool: TestPool, ws: Path, tmp_path: Path
) -> None:
    c = _containment(agent_pool, ws, tmp_path / "state")
    prepared = await c.prepare("s1", owner="ann", reservation=None, cwd=f"{ws}/ann/deep/proj")
    user = prepared.user
    assert user is not None and prepared.workdir == ws / "ann" / "deep" / "proj"
    for path in (ws / "ann", ws / "ann" / "deep", ws / "ann" / "deep" / "proj"):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.uid, user.gid, 0o700)
    await prepared.release()


@pytest.mark.parametrize(
    "case",
    [
        ("root-owned", "theirs", "belongs to uid 0"),
        ("symlink", "lnk/x", "symbolic link"),
        ("other-user", "bobs/sub", "may not enter or create"),
        ("file", "afile", "not a directory"),
        (None, "daemon-files/x", "overlaps the daemon's own files"),
        (None, "", "workspace root itself"),
    ],
)
async def test_refused_workdirs(
    agent_pool: TestPool, ws: Path, tmp_path: Path, case: tuple[str | None, str, str]
) -> None:
    setup, cwd, message = case
    other = agent_pool.spec.user(3)
    target = tmp_path / "link-target"
    target.mkdir()
    match setup:
        case "root-owned":
            (ws / "theirs").mkdir()
        case "symlink":
            (ws / "lnk").symlink_to(target)
        case "other-user":
            (ws / "bobs").mkdir(mode=0o700)
            os.chown(ws / "bobs", other.uid, other.gid)
        case "file":
            (ws / "afile").write_text("")
    c = _containment(agent_pool, ws, tmp_path / "state")
    with pytest.raises(ValueError, match=message):
        await c.prepare("s1", owner="ann", reservation=None, cwd=f"{ws}/{cwd}")
    assert list(target.iterdir()) == []


async def test_owners_keep_their_users_across_restarts_and_the_pool_runs_out(
    agent_pool: TestPool, ws: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = _containment(agent_pool, ws, state)
    users = {}
    for owner in ("o0", "o1", "o2", None):
        prepared = await first.prepare(
            f"s-{owner}", owner=owner, reservation=None, cwd=f"{ws}/{owner}"
        )
        assert prepared.user is not None
        users[owner] = prepared.user.uid
        await prepared.release()
    assert len(set(users.values())) == 4  # four owners, four users
    with pytest.raises(PoolExhausted, match="all 4 agent users"):
        await first.prepare("s-x", owner="o4", reservation=None, cwd=f"{ws}/o4")
    assert stat.S_IMODE((state / "agent-users.json").stat().st_mode) == 0o600

    again = _containment(agent_pool, ws, state)  # a restarted daemon
    prepared = await again.prepare("s-y", owner="o1", reservation=None, cwd=f"{ws}/o1/next")
    assert prepared.user is not None and prepared.user.uid == users["o1"]
    await prepared.release()
