"""The task's repository in a new session's working directory, made by its agent user.

Every git here runs as the session's agent user in a leaf of its cgroup (the repository,
its config and hooks are the agent's from the first byte), with the credential helper that
asks the daemon's socket. Each step is skipped when already done, so a recovery or a daemon
restart keeps a workdir that holds the clone as it is.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from vm_agent.gitwork.run import GitFailed, GitSetup, Ran, base_env, run_git
from vm_agent.gitwork.spec import RepositorySpec
from vm_agent.process.launch import Launcher


class CloneFailed(GitFailed):
    pass


async def prepare_clone(
    spec: RepositorySpec,
    workdir: Path,
    *,
    setup: GitSetup,
    launcher: Launcher,
    env: Mapping[str, str],
) -> bool:
    """Clones ``spec`` into ``workdir`` and checks out its task branch; False when the
    workdir already held that clone (kept as it is). Raises ``CloneFailed``."""
    git_env = {**base_env(env.get("HOME", "/"), env.get("PATH", base_env("/")["PATH"]))}
    helper = setup.helper_config()

    async def git(*args: str) -> Ran:
        return await run_git(
            ["git", *args], cwd=workdir, env=git_env, launcher=launcher, timeout_s=setup.timeout_s
        )

    async def ok(what: str, *args: str) -> Ran:
        ran = await git(*args)
        if ran.returncode != 0:
            raise CloneFailed(f"repository {spec.url}: {what} failed: git said: {ran.said()}")
        return ran

    try:
        st = os.lstat(workdir / ".git")
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise CloneFailed(f"repository {spec.url}: {workdir}/.git is not a directory")
        origin = await git("config", "--get", "remote.origin.url")
        if origin.stdout.decode("utf-8", "replace").strip() != spec.url:
            raise CloneFailed(f"repository {spec.url}: {workdir} already holds another repository")
        return False
    if any(os.scandir(workdir)):
        raise CloneFailed(f"repository {spec.url}: the working directory {workdir} is not empty")
    branch = [] if spec.base_branch is None else ["--branch", spec.base_branch]
    await ok(
        "the clone",
        "-c",
        "credential.helper=",
        "-c",
        f"credential.helper={helper}",
        "-c",
        "credential.useHttpPath=true",
        "clone",
        "--quiet",
        "--origin",
        "origin",
        *branch,
        "--",
        spec.url,
        ".",
    )
    # The workspace's own config: the agent's later git asks the daemon too.
    for key, value in (
        ("credential.helper", helper),
        ("credential.useHttpPath", "true"),
        ("user.name", spec.author.name),
        ("user.email", spec.author.email),
    ):
        await ok(f"setting {key}", "config", "--local", key, value)
    task = spec.task_branch
    has_local = await git("rev-parse", "--verify", "--quiet", f"refs/heads/{task}")
    if has_local.returncode != 0:
        remote = await git("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{task}")
        start = [f"refs/remotes/origin/{task}"] if remote.returncode == 0 else []
        await ok("creating the task branch", "checkout", "--quiet", "-b", task, *start)
    return True
