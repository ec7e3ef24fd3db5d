"""git on a session's workspace: status, diff against the task's base, the branch's log.

git runs through the session's ``Launcher`` (``containment.SessionContainment``: as the
agent user, in a leaf cgroup of the session's; without containment, as the daemon in a
process group), with the command line and environment of ``gitargs`` (no program the
repository names ever runs), bounded in time (the whole tree is killed) and in output
(what is past the bound is cut and the answer says ``truncated``).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream

from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.process import procgroup
from vm_agent.process.launch import Launcher, PlainLauncher
from vm_agent.workspace import gitargs as g

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_OUTPUT_BYTES = 2 * MiB
TIMEOUT_S = 20.0
_STDERR_BYTES = 8192
_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class GitResult:
    returncode: int | None  # None: killed at the time bound
    stdout: bytes
    stderr: str
    truncated: bool


async def _collect(stream: ByteReceiveStream | None, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of ``stream``; True when there was more (the rest is drained)."""
    if stream is None:
        return b"", False
    data = bytearray()
    over = False
    try:
        while True:
            chunk = await stream.receive(_CHUNK)
            room = limit - len(data)
            data += chunk[:room]
            if len(chunk) > room:
                over = True
                break
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    return bytes(data), over


class WorkspaceGit:
    """git for one session's directory ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        launcher: Launcher | None,
        env: Mapping[str, str],
        timeout_s: float = TIMEOUT_S,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self.root = root
        self.launcher: Launcher = launcher or PlainLauncher()
        self.env = g.git_env(env, str(root), str(root.parent))
        self.timeout_s = timeout_s
        self.max_output_bytes = max_output_bytes
        self._overrides: list[str] | None = None

    # -- the methods ------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        res = await self._ok(g.status_args())
        return {**g.parse_status(res.stdout), "truncated": res.truncated}

    async def diff(self, base: str | None, *, stat_only: bool = False) -> dict[str, Any]:
        commit, _ = await self._base(base)
        res = await self._ok(g.diff_args(commit, stat=stat_only))
        out: dict[str, Any] = {"base": commit, "truncated": res.truncated}
        if stat_only:
            out["files"] = g.parse_numstat(res.stdout)
        else:
            out["diff"] = res.stdout.decode("utf-8", "replace")
        return out

    async def log(self, base: str | None, max_count: int) -> dict[str, Any]:
        commit, whole = await self._base(base)
        head = await self._run(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
        if head.returncode != 0:
            return {"base": commit, "commits": [], "truncated": False}
        # No upstream and no base named: every commit of HEAD is the branch's.
        range_ = "HEAD" if whole else f"{commit}..HEAD"
        res = await self._ok(g.log_args(range_, max_count))
        return {"base": commit, "commits": g.parse_log(res.stdout), "truncated": res.truncated}

    # -- the base ---------------------------------------------------------------------------

    async def _base(self, base: str | None) -> tuple[str, bool]:
        """The commit to compare with, and whether it is the repository's beginning."""
        if base is not None:
            try:
                g.check_ref(base)
            except ValueError as exc:
                raise JsonRpcError.invalid_params(str(exc)) from None
            res = await self._run(
                ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{base}^{{commit}}"]
            )
            if res.returncode != 0:
                raise JsonRpcError.invalid_params(f"base {base!r} is not a commit here")
            return res.stdout.decode().strip(), False
        upstream = await self._run(["merge-base", "HEAD", "@{upstream}"])
        if upstream.returncode == 0 and upstream.stdout.strip():
            return upstream.stdout.decode().strip(), False
        roots = await self._run(["rev-list", "--max-parents=0", "HEAD"])
        if roots.returncode == 0 and roots.stdout.strip():
            return roots.stdout.decode().split()[-1], True
        return g.EMPTY_TREE, True  # no commit yet

    # -- running git ------------------------------------------------------------------------

    def _check_repository(self) -> None:
        """``.git`` is a real directory of the workspace (no gitfile or link leading out)."""
        try:
            st = os.lstat(self.root / ".git")
        except FileNotFoundError:
            raise JsonRpcError.invalid_params(
                "the session's directory is not a git repository"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise JsonRpcError.invalid_params(
                ".git is not a directory (a link or a gitfile leading elsewhere is not followed)"
            )

    async def _ok(self, args: Sequence[str]) -> GitResult:
        res = await self._run(args)
        if res.returncode is None:
            raise JsonRpcError.invalid_params(f"git {args[0]} took longer than {self.timeout_s:g}s")
        if res.returncode != 0 and not res.truncated:
            raise JsonRpcError.invalid_params(f"git {args[0]} failed: {res.stderr.strip()[:500]}")
        return res

    async def _run(self, args: Sequence[str]) -> GitResult:
        self._check_repository()
        if self._overrides is None:
            listed = await self._spawn(
                g.git_argv(str(self.root), [], ["config", "--list", "--name-only", "-z"])
            )
            names = listed.stdout.decode("utf-8", "replace").split("\0")
            self._overrides = g.driver_overrides(n for n in names if n)
        return await self._spawn(g.git_argv(str(self.root), self._overrides, args))

    async def _spawn(self, argv: list[str]) -> GitResult:
        leaf = f"git-{secrets.token_hex(4)}"
        try:
            launched = await self.launcher.launch(
                argv,
                leaf=leaf,
                cwd=self.root,
                env=self.env,
                stdin_pipe=False,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise JsonRpcError.invalid_params(f"cannot run git: {exc.strerror or exc}") from None
        process = launched.process
        stdout = stderr = b""
        truncated = False
        returncode: int | None = None
        try:
            with anyio.move_on_after(self.timeout_s):
                async with anyio.create_task_group() as tg:

                    async def err() -> None:
                        nonlocal stderr
                        stderr, _ = await _collect(process.stderr, _STDERR_BYTES)

                    tg.start_soon(err)
                    stdout, truncated = await _collect(process.stdout, self.max_output_bytes)
                    if truncated:
                        tg.cancel_scope.cancel()
                returncode = None if truncated else await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await procgroup.stop_tree(
                    process, launched.tree, close_stdin=False, stdin_grace_s=0.0, term_grace_s=0.5
                )
                await process.aclose()
                self.launcher.forget(launched.leaf)
        if truncated:
            returncode = process.returncode
        return GitResult(returncode, stdout, stderr.decode("utf-8", "replace"), truncated)
