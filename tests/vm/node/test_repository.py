"""Issue 23 in the VM: a task with a repository runs on the booted node and its branch
comes back to the host.

The GitHub stand-in runs on the host (tests/vm/github_host.py); the host's control plane
acts as its App over loopback, and the node's git reaches the stand-in's bare
repositories through a guest forward, over HTTPS with the stand-in's CA in the guest's
system store. A user links acme's installation with a GitHub user token (proven), and
submits a task on `acme/widgets` with a pull request; the fake agent of the node's catalog
writes a file and commits it through its ACP tools. The task ends `completed`, the task
branch with that commit (by the configured author) is in the stand-in's bare repository,
the pull request is recorded, and no installation token the stand-in issued is in the
node's journal or on its disk.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.vm.booted import BootedNode
from tests.vm.figures import FigureBook
from tests.vm.github_host import ACME, AUTHOR_EMAIL, AUTHOR_NAME, REPOSITORY, GitHubHost
from tests.vm.node.conftest import COMMIT_AGENT

pytestmark = pytest.mark.vm

ENDS = ("completed", "failed", "crashed", "cancelled", "timed_out", "auth_required")
TASK_S = 900.0  # a clone, a fake agent's turn and a push under emulation: minutes
TASK_ID = "vm-repo-1"
BRANCH = f"vm-agent/{TASK_ID}"
ASKED = {"path": "fix.txt", "content": "fixed in the VM\n", "message": "fix the widgets in a VM"}
SEARCHED = ("/srv/workspaces", "/var/lib/vm-agent")


def _bare_git(path: Any, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(path), *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def _wait_for_end(node: BootedNode, user: dict[str, str], github: GitHubHost) -> dict[str, Any]:
    plane = node.plane
    deadline = time.monotonic() + TASK_S
    task: dict[str, Any] = plane.http.get(f"/api/tasks/{TASK_ID}", headers=user).json()
    while task["status"] not in ENDS and time.monotonic() < deadline:
        time.sleep(1)
        task = plane.http.get(f"/api/tasks/{TASK_ID}", headers=user).json()
    if task["status"] != "completed":
        keys = ("status", "reason", "outcome", "pushed", "pushReason", "transitions")
        calls = "\n".join(str(c) for c in github.state.calls[-30:])
        pytest.fail(
            f"task: { ({k: task.get(k) for k in keys}) }\nGitHub stand-in calls:\n{calls}\n"
            f"node journal:\n{node.journal(lines=120)}"
        )
    return task


def test_a_task_s_commit_comes_back_from_the_node_as_its_branch_and_pull_request(
    node: BootedNode, vm_github: GitHubHost, vm_figures: FigureBook
) -> None:
    plane = node.plane
    github = vm_github
    github.trust_in(node.vm)
    # the user proves the link to acme's installation with a user token GitHub knows
    user = {"Authorization": f"Bearer {plane.plane.tokens.mint_user_token('uma')}"}
    linked = plane.http.post(
        "/api/github/installations",
        json={
            "installationId": ACME,
            "githubUserToken": github.state.add_user_token("uma-gh", (ACME,)),
        },
        headers=user,
    )
    assert linked.status_code == 201 and linked.json()["proven"] is True, linked.text
    body = {
        "taskId": TASK_ID,
        "agent": COMMIT_AGENT,
        "prompt": json.dumps(ASKED),
        "repository": REPOSITORY,
        "pullRequest": True,
        # the warm node is small (2 vCPU, 4 GiB): the platform's default would ask for another
        "requirements": {"minVcpu": 0.5, "minMemoryGb": 0.5, "minDiskGb": 1},
    }
    began = time.monotonic()
    submitted = plane.http.post("/api/tasks", json=body, headers=user)
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["nodeId"] == node.node_id, submitted.json()
    task = _wait_for_end(node, user, github)
    took = time.monotonic() - began
    vm_figures.add("node", "repository task: submitted to completed (clone, turn, push)", took, "s")

    # the task branch, in the stand-in's bare repository on the host, is the task's head
    repo = github.state.repository(REPOSITORY)
    branches = github.state.branches(repo)
    head = branches[BRANCH]
    assert (task["branch"], task["headCommit"], task["pushed"]) == (BRANCH, head, True), task
    assert branches["main"] != head
    # the agent's commit on top of main, by the configured author
    assert _bare_git(repo.path, "show", f"{head}:{ASKED['path']}") == ASKED["content"]
    said = _bare_git(repo.path, "log", "-1", "--format=%s|%an|%ae|%P", head).strip()
    assert said == f"{ASKED['message']}|{AUTHOR_NAME}|{AUTHOR_EMAIL}|{branches['main']}"
    # the pull request GitHub made is the one recorded
    (pull,) = [p for p in github.state.pulls if p["head"]["ref"] == BRANCH]
    assert (pull["base"]["ref"], pull["head"]["sha"]) == ("main", head)
    assert task["pullRequestUrl"] == pull["html_url"]
    # the guest's git came through the forward with installation tokens: a fetch and a push
    git_calls = [c for c in github.state.calls if c.path.startswith(f"/{REPOSITORY}.git/")]
    assert any(c.path.endswith("/git-upload-pack") and c.status == 200 for c in git_calls)
    assert any(c.path.endswith("/git-receive-pack") and c.status == 200 for c in git_calls)
    assert all(c.auth in ("basic", "none") for c in git_calls), git_calls

    tokens = github.issued_tokens()
    assert tokens
    # no token in the node's journal (the daemon's unit, and everything else logged)
    logged = (
        node.journal(lines=1_000_000)
        + node.vm.run(["journalctl", "--no-pager", "-o", "cat"], timeout=300, check=True).stdout
    )
    assert not [t for t in tokens if t in logged]
    # nor on its disk: the same search finds the agent's work, and no token
    patterns = "\n".join(tokens).encode()
    searched = node.vm.run(
        ["grep", "-rlF", "-D", "skip", "-f", "-", *SEARCHED], stdin=patterns, timeout=300
    )
    assert (searched.exit_code, searched.stdout) == (1, ""), searched.describe()
    control = node.vm.run(
        ["grep", "-rlF", "-D", "skip", "-e", ASKED["content"].strip(), *SEARCHED], timeout=300
    )
    assert control.exit_code == 0 and f"/{ASKED['path']}" in control.stdout, control.describe()
