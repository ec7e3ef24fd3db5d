"""``workspace/push``: the task branch leaves the workspace without root ever running git on
the agent's repository and without a write token ever reaching a process of the agent's user.

1. The agent user (a leaf of the session's cgroup) writes a bundle of ``refs/heads/<task>``
   to a pipe; the daemon keeps it in a file of its own (bounded in size and time). Whatever
   the repository's config, hooks or alternates say, they act with the agent's rights.
2. The daemon fetches that one ref from the bundle file into a bare mirror only it owns
   (``transfer.fsckObjects`` on, no hooks, no transport but the bundle file): a bundle is
   data, so nothing of the workspace's config is read as root.
3. The daemon asks the remote (``ls-remote --symref``) for its default branch and the base,
   refuses a task branch that is either, answers ``pushed: false`` when the task branch has no
   commit beyond the base, and otherwise pushes ``refs/heads/<task>`` from the mirror with a
   ``write`` token that a helper reads from the daemon's git process's own environment.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from vm_agent.common.redact import Redactor
from vm_agent.gitwork.run import GitFailed, GitSetup, Ran, base_env, run_git
from vm_agent.gitwork.spec import RepositorySpec
from vm_agent.process.launch import Launcher

TOKEN_VAR = "VM_AGENT_GIT_TOKEN"  # noqa: S105 (a variable's name)
# The daemon's own helper: the token comes from this git process's environment only.
_ENV_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'printf "username=x-access-token\\npassword=%s\\n" "${TOKEN_VAR}"; }}; f'
)
NO_COMMITS = "no commits on the task branch"
Mint = Callable[[str, str], Awaitable[tuple[str, float]]]  # (workspace, access) -> token


class PushRefused(Exception):
    """The push is not allowed (the default or base branch); for the caller as a refusal."""


@dataclass(frozen=True, slots=True)
class Remote:
    default_branch: str | None
    heads: dict[str, str]  # branch -> commit


def parse_ls_remote(out: str) -> Remote:
    """``git ls-remote --symref URL HEAD refs/heads/...`` (pure)."""
    default = head = None
    heads: dict[str, str] = {}
    for line in out.splitlines():
        left, _, ref = line.partition("\t")
        if left.startswith("ref: ") and ref == "HEAD":
            target = left[len("ref: ") :]
            if target.startswith("refs/heads/"):
                default = target[len("refs/heads/") :]
        elif ref == "HEAD":
            head = left
        elif ref.startswith("refs/heads/"):
            heads[ref[len("refs/heads/") :]] = left
    if default is not None and head is not None:
        heads.setdefault(default, head)  # HEAD's commit is its branch's
    return Remote(default, heads)


def refusal(task: str, base: str | None, default: str | None) -> str | None:
    """Why ``task`` may not be pushed (pure); None: it may."""
    if default is not None and task == default:
        return f"the task branch {task!r} is the repository's default branch"
    if base is not None and task == base:
        return f"the task branch {task!r} is the base branch"
    return None


def _root_git_args() -> list[str]:
    """The daemon's git on its mirror: no hooks, no transport but a bundle file and http(s)."""
    settings = (
        "core.hooksPath=/dev/null",
        "core.fsmonitor=false",
        "protocol.allow=never",
        "protocol.file.allow=always",
        "protocol.http.allow=always",
        "protocol.https.allow=always",
        "transfer.fsckObjects=true",
        "credential.helper=",
        f"credential.helper={_ENV_HELPER}",
    )
    out = ["git"]
    for s in settings:
        out += ["-c", s]
    return out


class Pusher:
    """``workspace/push`` for every session of the daemon (one push per session at a time)."""

    def __init__(self, setup: GitSetup, mint: Mint, redactor: Redactor) -> None:
        self.setup = setup
        self._mint = mint
        self._redactor = redactor
        self._locks: dict[str, anyio.Lock] = {}

    async def _token(self, workspace_id: str, access: str) -> str:
        token, _ = await self._mint(workspace_id, access)
        self._redactor.add_secret(token)
        return token

    async def _root(self, mirror: Path, *args: str, token: str | None = None) -> Ran:
        env = base_env(str(mirror))
        env["GIT_DIR"] = str(mirror)
        if token is not None:
            env[TOKEN_VAR] = token
        return await run_git(
            [*_root_git_args(), *args], cwd=mirror, env=env, timeout_s=self.setup.timeout_s
        )

    async def push(
        self,
        session_id: str,
        spec: RepositorySpec,
        workdir: Path,
        *,
        launcher: Launcher,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        task = spec.task_branch
        why = refusal(task, spec.base_branch, None)
        if why is not None:
            raise PushRefused(why)
        lock = self._locks.setdefault(session_id, anyio.Lock())
        async with lock:
            mirror = await self._mirror(session_id)
            head = await self._take_bundle(mirror, task, workdir, launcher, env)
            listed = await self._root(
                mirror,
                "ls-remote",
                "--symref",
                spec.url,
                "HEAD",
                *(f"refs/heads/{b}" for b in {task, spec.base_branch or task}),
                token=await self._token(spec.workspace_id, "read"),
            )
            if listed.returncode != 0:
                raise GitFailed(f"repository {spec.url}: ls-remote failed: {listed.said()}")
            remote = parse_ls_remote(listed.stdout.decode("utf-8", "replace"))
            base = spec.base_branch or remote.default_branch
            why = refusal(task, base, remote.default_branch)
            if why is not None:
                raise PushRefused(why)
            answer = {"branch": task, "base_branch": base, "head_commit": head}
            base_sha = remote.heads.get(base) if base else None
            if base_sha is not None and await self._contains(mirror, base_sha, head):
                return {**answer, "pushed": False, "reason": NO_COMMITS}
            if remote.heads.get(task) != head:
                pushed = await self._root(
                    mirror,
                    "push",
                    "--quiet",
                    "--no-verify",
                    spec.url,
                    f"+refs/heads/{task}:refs/heads/{task}",
                    token=await self._token(spec.workspace_id, "write"),
                )
                if pushed.returncode != 0:
                    raise GitFailed(f"repository {spec.url}: the push failed: {pushed.said()}")
            return {**answer, "pushed": True}

    async def _contains(self, mirror: Path, base_sha: str, head: str) -> bool:
        """Whether ``head`` is ``base_sha`` or behind it (no commit of its own)."""
        if base_sha == head:
            return True
        known = await self._root(mirror, "cat-file", "-e", f"{base_sha}^{{commit}}")
        if known.returncode != 0:
            return False  # the base is not in the task branch's history at all
        ran = await self._root(mirror, "merge-base", "--is-ancestor", head, base_sha)
        return ran.returncode == 0

    async def _mirror(self, session_id: str) -> Path:
        root = self.setup.mirrors_dir
        await anyio.to_thread.run_sync(lambda: root.mkdir(mode=0o700, parents=True, exist_ok=True))
        os.chmod(root, 0o700)
        mirror = root / f"{session_id}.git"
        if not (mirror / "HEAD").exists():
            mirror.mkdir(mode=0o700, exist_ok=True)
            made = await self._root(mirror, "init", "--quiet", "--bare")
            if made.returncode != 0:
                raise GitFailed(f"the daemon's mirror could not be made: {made.said()}")
        return mirror

    async def _take_bundle(
        self, mirror: Path, task: str, workdir: Path, launcher: Launcher, env: Mapping[str, str]
    ) -> str:
        """The task branch from the workspace into the mirror; its head commit."""
        agent_env = base_env(env.get("HOME", "/"), env.get("PATH", base_env("/")["PATH"]))
        fd, name = tempfile.mkstemp(prefix="push-", suffix=".bundle", dir=mirror)
        bundle = Path(name)
        try:
            with os.fdopen(fd, "wb") as sink:
                made = await run_git(
                    ["git", "bundle", "create", "--quiet", "-", f"refs/heads/{task}"],
                    cwd=workdir,
                    env=agent_env,
                    launcher=launcher,
                    timeout_s=self.setup.timeout_s,
                    max_output=self.setup.max_bundle_bytes,
                    sink=sink,
                )
            if made.returncode != 0:
                raise GitFailed(
                    f"the task branch {task!r} could not be read from the workspace: {made.said()}"
                )
            fetched = await self._root(
                mirror,
                "fetch",
                "--quiet",
                "--no-tags",
                str(bundle),
                f"+refs/heads/{task}:refs/heads/{task}",
            )
            if fetched.returncode != 0:
                raise GitFailed(f"the workspace's bundle was refused: {fetched.said()}")
        finally:
            await anyio.Path(bundle).unlink(missing_ok=True)
        head = await self._root(mirror, "rev-parse", "--verify", f"refs/heads/{task}^{{commit}}")
        if head.returncode != 0:
            raise GitFailed(f"the task branch {task!r} has no commit")
        return head.stdout.decode().strip()


@dataclass(frozen=True, slots=True)
class GitWork:
    """The daemon's git for task repositories: how it is wired, and its pusher."""

    setup: GitSetup
    pusher: Pusher
