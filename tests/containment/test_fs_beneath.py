"""fs/* beneath the session root: links swapped in while requests run, and the agent's rights.

The race test runs a thread that keeps swapping a directory for a symlink to outside (and
a file for a symlink to an outside file) with atomic renames, while reads and writes
through that path run: every one is answered from inside or refused, none escapes. It runs
with openat2 and with the O_NOFOLLOW walk.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.capabilities import missing
from tests.containment.pool import TestPool, require_root
from vm_agent.acp.fs import FileSystemService
from vm_agent.containment import fsuid
from vm_agent.containment.beneath import HAVE_OPENAT2
from vm_agent.jsonrpc.errors import JsonRpcError

pytestmark = pytest.mark.anyio

SECRET = "SECRET outside\n"
INSIDE = "inside\n"
REQUESTS = 1500


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): both names exist before, during and after."""
    if _libc.renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _swapper(root: Path, stop: threading.Event, swaps: list[int]) -> None:
    # root/link flips between a real directory and a symlink to outside, root/f.txt between
    # a real file and a symlink to the outside secret: atomic exchanges, as fast as it goes.
    n = 0
    while not stop.is_set():
        _exchange(root / ".real-dir", root / "link")
        _exchange(root / ".real-file", root / "f.txt")
        n += 1
    swaps.append(n)


@pytest.mark.parametrize(
    "use_openat2",
    [True, False],
    ids=["openat2", "walk"],
)
async def test_swapping_links_while_requests_run_never_escapes(
    tmp_path: Path, use_openat2: bool
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / ".real-dir").mkdir()
    (root / ".real-dir" / "secret.txt").write_text(INSIDE)
    (root / ".real-file").write_text(INSIDE)
    if use_openat2 and not HAVE_OPENAT2:
        # Linux 5.6+ has it (Debian 12's 6.1 does); else the service would quietly walk
        missing("no openat2 system call in this kernel")
    (root / "link").symlink_to(outside)
    (root / "f.txt").symlink_to(outside / "secret.txt")
    fs = FileSystemService(root, use_openat2=use_openat2)
    counts = {"inside": 0, "refused": 0, "escaped": 0, "writes_ok": 0, "writes_refused": 0}
    refusals: set[str] = set()

    async def read(path: Path) -> None:
        try:
            content = (await fs.read_text_file({"sessionId": "s", "path": str(path)}))["content"]
        except JsonRpcError as exc:
            counts["refused"] += 1
            refusals.add(exc.message.split(": ")[0].split(" ")[-1])
            return
        counts["escaped" if content == SECRET else "inside"] += 1

    async def write(i: int) -> None:
        params: dict[str, Any] = {"sessionId": "s", "path": f"{root}/link/w{i}.txt", "content": "w"}
        try:
            await fs.write_text_file(params)
            counts["writes_ok"] += 1
        except JsonRpcError:
            counts["writes_refused"] += 1

    stop, swaps = threading.Event(), list[int]()
    swapper = threading.Thread(target=_swapper, args=(root, stop, swaps))
    swapper.start()
    try:
        limiter = anyio.Semaphore(16)

        async def bounded(kind: int) -> None:
            async with limiter:
                if kind % 3 == 0:
                    await read(root / "link" / "secret.txt")
                elif kind % 3 == 1:
                    await read(root / "f.txt")
                else:
                    await write(kind)

        async with anyio.create_task_group() as tg:
            for i in range(REQUESTS):
                tg.start_soon(bounded, i)
    finally:
        stop.set()
        swapper.join()
        fs.close()
    written_outside = sorted(p.name for p in outside.iterdir() if p.name != "secret.txt")
    print(f"\n{'openat2' if use_openat2 else 'walk'}: {counts}, {swaps[0]} swap rounds")
    assert counts["escaped"] == 0, counts
    assert written_outside == [], written_outside
    assert (outside / "secret.txt").read_text() == SECRET
    # The race was real: some requests met the directory, some the link.
    assert counts["inside"] > 0 and counts["refused"] > 0, counts
    assert (
        counts["inside"] + counts["refused"] + counts["writes_ok"] + counts["writes_refused"]
        == REQUESTS
    )


async def test_set_id_bits_are_never_carried_over(tmp_path: Path) -> None:
    target = tmp_path / "tool"
    target.write_text("old\n")
    target.chmod(0o6755)
    fs = FileSystemService(tmp_path)
    await fs.write_text_file({"sessionId": "s", "path": str(target), "content": "new\n"})
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert target.read_text() == "new\n"
    fs.close()


async def test_fs_acts_with_the_agent_users_rights(agent_pool: TestPool, tmp_path: Path) -> None:
    require_root()
    user = agent_pool.spec.user(0)
    root = agent_pool.workspaces / "fs-rights"
    root.mkdir()
    try:
        os.chown(root, user.uid, user.gid)
        root.chmod(0o700)
        (root / "root-only.txt").write_text("root's\n")
        (root / "root-only.txt").chmod(0o600)
        (root / "world.txt").write_text("anyone's\n")
        (root / "world.txt").chmod(0o644)
        (root / "rootdir").mkdir(mode=0o755)
        setuid = root / "mine.sh"
        setuid.write_text("#!/bin/sh\n")
        os.chown(setuid, user.uid, user.gid)
        setuid.chmod(0o4755)
        fs = FileSystemService(root, credentials=(user.uid, user.gid))

        def p(name: str) -> str:
            return str(root / name)

        with pytest.raises(JsonRpcError, match="permission denied"):
            await fs.read_text_file({"sessionId": "s", "path": p("root-only.txt")})
        assert (await fs.read_text_file({"sessionId": "s", "path": p("world.txt")}))[
            "content"
        ] == "anyone's\n"
        await fs.write_text_file({"sessionId": "s", "path": p("new/deep.txt"), "content": "x"})
        for made in (root / "new", root / "new" / "deep.txt"):
            st = made.stat()
            assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
        with pytest.raises(JsonRpcError, match="permission denied"):
            await fs.write_text_file({"sessionId": "s", "path": p("rootdir/x"), "content": "x"})
        await fs.write_text_file({"sessionId": "s", "path": p("mine.sh"), "content": "#!/bin/sh"})
        assert stat.S_IMODE(setuid.stat().st_mode) == 0o755
        fs.close()
        # The worker threads are root again afterwards.
        assert await anyio.to_thread.run_sync((root / "root-only.txt").read_text) == "root's\n"
    finally:
        shutil.rmtree(root)


def test_acting_as_is_per_thread_and_restored(agent_pool: TestPool, tmp_path: Path) -> None:
    require_root()
    user = agent_pool.spec.user(1)
    private = tmp_path / "private"
    private.write_text("root's\n")
    private.chmod(0o600)
    seen: list[str] = []
    groups: dict[str, list[int]] = {"before": os.getgroups()}
    assert groups["before"] != [user.gid]  # else a leak of the user's groups would not show
    inside = threading.Event()
    release = threading.Event()

    def as_user() -> None:
        with fsuid.acting_as(user.uid, user.gid):
            groups["worker inside"] = os.getgroups()
            try:
                private.read_text()
                seen.append("read")
            except PermissionError:
                seen.append("denied")
            inside.set()
            release.wait(10)
        groups["worker after"] = os.getgroups()

    worker = threading.Thread(target=as_user)
    worker.start()
    assert inside.wait(10)
    assert private.read_text() == "root's\n"  # this thread meanwhile is still root
    # The raw setgroups is per thread: this thread keeps its groups while the worker has
    # only the user's, and the worker gets its own back on leaving.
    groups["main meanwhile"] = os.getgroups()
    release.set()
    worker.join()
    assert seen == ["denied"]
    assert groups["worker inside"] == [user.gid]
    assert groups["main meanwhile"] == groups["before"], groups
    assert groups["worker after"] == groups["before"], groups
    assert os.getgroups() == groups["before"]
