"""workspace/* as the session's agent user: its rights, not the daemon's; links swapped in
while requests run never lead out; git as the agent user (real pool users, real git)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import anyio
import pytest

from tests.containment.harness import contained, hostile_spec
from tests.containment.pool import TestPool, require_cgroup_v2, require_root
from tests.containment.test_fs_beneath import INSIDE, SECRET, _swapper
from tests.server.test_workspace import make_repo
from vm_agent.containment.beneath import HAVE_OPENAT2
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.server.workspace_methods import files_of, git_of
from vm_agent.workspace.files import WorkspaceFiles

pytestmark = pytest.mark.anyio


async def test_reads_and_writes_with_the_agent_users_rights(
    agent_pool: TestPool, tmp_path: Path
) -> None:
    require_root()
    require_cgroup_v2()
    async with contained(agent_pool, tmp_path, [hostile_spec()]) as c:
        ws = c.workspace("view-proj")
        session = await c.ready("hostile", ws, owner="vera")
        assert session.containment is not None and session.containment.user is not None
        user = session.containment.user
        files = files_of(session)
        # A file of root's, 0600, inside the workspace: the daemon could read it, the agent not.
        (ws / "roots.txt").write_text("root only\n")
        (ws / "roots.txt").chmod(0o600)
        with pytest.raises(JsonRpcError, match="permission denied"):
            await files.read("roots.txt", 0, 100)
        assert (await WorkspaceFiles(ws).read("roots.txt", 0, 100))["content"] == "root only\n"
        # An upload belongs to the agent's user.
        await files.write("up/notes.md", b"hi\n", make_dirs=True)
        st = (ws / "up" / "notes.md").stat()
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
        assert (ws / "up").stat().st_uid == user.uid
        # git runs as the agent user: a .git only root may enter is not readable to it.
        make_repo(ws / "repo")
        shutil.chown(ws / "repo", user.uid, user.gid)
        for path in (ws / "repo").rglob("*"):
            if ".git" not in path.parts:
                os.chown(path, user.uid, user.gid, follow_symlinks=False)
        (ws / "repo" / ".git").chmod(0o700)
        repo_session = await c.ready("hostile", ws / "repo", owner="vera")
        with pytest.raises(JsonRpcError, match="git status failed"):
            await git_of(repo_session).status()
        for path in (ws / "repo" / ".git").rglob("*"):
            os.chown(path, user.uid, user.gid, follow_symlinks=False)
        os.chown(ws / "repo" / ".git", user.uid, user.gid)
        (ws / "repo" / "README.md").write_text("changed\n")
        diff = await git_of(repo_session).diff(None)
        assert "+changed" in diff["diff"]


@pytest.mark.parametrize(
    "use_openat2",
    [
        pytest.param(True, marks=pytest.mark.skipif(not HAVE_OPENAT2, reason="no openat2 here")),
        False,
    ],
    ids=["openat2", "walk"],
)
async def test_swapping_links_while_viewers_read_never_escapes(
    tmp_path: Path, use_openat2: bool
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / ".real-dir").mkdir()
    (root / ".real-dir" / "secret.txt").write_text(INSIDE)
    (root / ".real-file").write_text(INSIDE)
    (root / "link").symlink_to(outside)
    (root / "f.txt").symlink_to(outside / "secret.txt")
    files = WorkspaceFiles(root, use_openat2=use_openat2)
    counts = {"inside": 0, "refused": 0, "escaped": 0}

    async def one(i: int) -> None:
        try:
            if i % 4 == 0:
                got = (await files.read("link/secret.txt", 0, 100))["content"]
            elif i % 4 == 1:
                got = (await files.read("f.txt", 0, 100))["content"]
            elif i % 4 == 2:
                listed = await files.list("link")
                got = (
                    SECRET
                    if any(
                        e["name"] == "secret.txt" and e["size"] == len(SECRET)
                        for e in listed["entries"]
                    )
                    else INSIDE
                )
            else:
                await files.write(f"link/w{i}.txt", b"w", make_dirs=False)
                got = INSIDE
        except JsonRpcError:
            counts["refused"] += 1
            return
        counts["escaped" if got == SECRET else "inside"] += 1

    stop, swaps = threading.Event(), list[int]()
    swapper = threading.Thread(target=_swapper, args=(root, stop, swaps))
    swapper.start()
    try:
        limiter = anyio.Semaphore(16)

        async def bounded(i: int) -> None:
            async with limiter:
                await one(i)

        async with anyio.create_task_group() as tg:
            for i in range(1200):
                tg.start_soon(bounded, i)
    finally:
        stop.set()
        swapper.join()
    assert counts["escaped"] == 0, counts
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert counts["inside"] > 0 and counts["refused"] > 0, counts
