"""Issue 23 with a real agent: a task with a repository, submitted to the control plane, runs
the pinned Claude Code (claude-agent-acp) on a real daemon. The daemon clones the repository
from the GitHub stand-in; the scripted model has Claude edit a file and commit it with its
own Bash tool; at the task's end the daemon pushes the task branch and the control plane opens
the pull request. The commit arrives in the stand-in's bare repository."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from control_plane.github import links as github_links
from tests.dispatch.harness import stack
from tests.github.conftest import ACME, APP_ID, Hub, app_key, hub  # noqa: F401 (fixtures)
from tests.real_agents.agents import CLAUDE, require_real_agents, write_agents_file
from tests.real_agents.harness import WAIT_S, rig
from tests.real_agents.model_api import Reply

pytestmark = [pytest.mark.real_agents, pytest.mark.anyio, pytest.mark.timeout(600)]


@pytest.fixture(autouse=True)
def _real_agents() -> None:
    require_real_agents()


async def test_claude_commits_in_the_task_s_clone_and_the_branch_comes_back(
    tmp_path: Path,
    hub: Hub,  # noqa: F811
) -> None:
    key = tmp_path / "app-key.pem"
    key.touch(mode=0o600)
    key.write_bytes(hub.app_key_pem)
    github = {
        "github_app_id": APP_ID,
        "github_app_private_key_file": key,
        "github_api_url": hub.url,
        "github_git_url": hub.url,
        "github_max_wait_s": 0.01,
    }
    # Claude's own Bash tool edits the checkout and commits, in the session's working
    # directory (the clone, on the task branch); then it says so.
    command = (
        "printf 'fixed by claude\\n' > fix.txt && git add fix.txt"
        " && git commit -q -m 'Fix the widgets' && git rev-parse --abbrev-ref HEAD"
    )
    replies = [Reply(text="Fixing it. ", tool=CLAUDE.shell(command)), Reply(text="Committed.")]
    async with rig(tmp_path, CLAUDE, replies) as r:
        entry = write_agents_file(tmp_path / "claude.toml", {"claude": r.entry()}).read_text()
        with tempfile.TemporaryDirectory(prefix="vmag-") as short:
            sock = str(Path(short) / "git.sock")  # a socket's path is at most 108 bytes
            async with stack(
                tmp_path,
                plane_settings=github,
                extra_agents=entry,
                VM_AGENT_GIT_CREDENTIAL_SOCKET=sock,
            ) as s:
                proof = github_links.Proof("github-user", "alice-gh", time.time())
                github_links.link_installation(s.plane.engine, "alice", str(ACME), "acme", proof)
                await s.submit(
                    taskId="fix-1",
                    agent="claude",
                    prompt="Fix the widgets and commit.",
                    permissionPolicy="allow",
                    repository="acme/widgets",
                    pullRequest=True,
                )
                ends = ("completed", "failed", "crashed", "timed_out", "auth_required")
                done = await s.until("fix-1", *ends, within_s=WAIT_S)
    assert done["status"] == "completed", done
    turns = r.script.turns()
    assert len(turns) == 2, turns
    # the command ran in the clone, on the task branch: its output went back to the model
    assert "vm-agent/fix-1" in turns[1].text
    repo = hub.state.repository("acme/widgets")
    head = hub.state.branches(repo)["vm-agent/fix-1"]
    assert done["headCommit"] == head and done["pushed"] is True
    assert hub.state.branches(repo)["main"] != head
    (pull,) = hub.state.pulls
    assert done["pullRequestUrl"] == pull["html_url"]
    bare = ["git", "--git-dir", str(repo.path)]
    shown = subprocess.run([*bare, "show", f"{head}:fix.txt"], capture_output=True, check=True)
    assert shown.stdout == b"fixed by claude\n"
    said = subprocess.run(
        [*bare, "log", "-1", "--format=%s|%an", head], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert said == "Fix the widgets|vm-agent[bot]"  # the identity the control plane gave
