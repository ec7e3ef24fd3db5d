"""A task with a repository through the real daemon (issue 23, both halves): the control
plane, acting as the App against the GitHub stand-in, starts the session with the task's
repository; the daemon clones it; the fake agent writes a file and commits it through its
ACP tools; at the end the dispatcher has the daemon push the task branch and opens the pull
request. The branch and its commit arrive in the stand-in's bare repository."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from control_plane.github import links as github_links
from tests.dispatch.harness import stack
from tests.github.conftest import ACME, APP_ID, Hub, app_key, hub  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_the_agent_s_commit_comes_back_as_the_task_branch_and_a_pull_request(
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
    with tempfile.TemporaryDirectory(prefix="vmag-") as short:
        sock = str(Path(short) / "git.sock")  # a socket's path is at most 108 bytes
        async with stack(tmp_path, plane_settings=github, VM_AGENT_GIT_CREDENTIAL_SOCKET=sock) as s:
            proof = github_links.Proof("github-user", "alice-gh", time.time())
            github_links.link_installation(s.plane.engine, "alice", str(ACME), "acme", proof)
            asked = {"path": "fix.txt", "content": "fixed\n", "message": "fix the widgets"}
            await s.submit(
                taskId="t1",
                agent="fake-commit",
                prompt=json.dumps(asked),
                repository="acme/widgets",
                pullRequest=True,
            )
            done = await s.until("t1", "completed", "failed", "crashed", "timed_out")
            assert done["status"] == "completed", done
    repo = hub.state.repository("acme/widgets")
    head = hub.state.branches(repo)["vm-agent/t1"]
    assert done["headCommit"] == head and done["pushed"] is True
    (pull,) = hub.state.pulls
    assert done["pullRequestUrl"] == pull["html_url"]
    assert (pull["head"]["ref"], pull["base"]["ref"]) == ("vm-agent/t1", "main")
    # the agent's commit, by the App's bot, on top of main
    bare = ["git", "--git-dir", str(repo.path)]
    shown = subprocess.run([*bare, "show", f"{head}:fix.txt"], capture_output=True, check=True)
    assert shown.stdout == b"fixed\n"
    said = subprocess.run(
        [*bare, "log", "-1", "--format=%s|%an|%ae", head],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert said == f"fix the widgets|vm-agent[bot]|{APP_ID}+vm-agent[bot]@users.noreply.github.com"
    assert hub.state.branches(repo)["main"] != head
