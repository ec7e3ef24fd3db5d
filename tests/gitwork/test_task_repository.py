"""Issue 23, the node's half, for real: a session started with a repository holds a clone on
its task branch made by its agent user; the fake agent commits through its ACP tools; the
daemon's ``workspace/push`` puts the branch in the stand-in's bare repository; credentials
reach git only through the daemon's socket, for the asking session's repository only; no
token is left on disk, in the agent's environment, the logs or the event log.
(Root, agent users, cgroups; SQLite and PostgreSQL for the control plane.)"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from control_plane.settings import ControlPlaneSettings
from tests.containment.pool import TestPool
from tests.control_plane.harness import running
from tests.github.conftest import Hub
from tests.gitwork.harness import git_node, root_git
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.server.errors import REFUSED

# Each case runs real git, agents and a control plane (2-3 s); the main path and the
# credential attacks stay in `make test`, the push refusals are `slow`.
pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_the_task_branch_comes_back_through_the_daemon_s_push(
    agent_pool: TestPool,
    tmp_path: Path,
    hub: Hub,
    cp_settings: ControlPlaneSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(cp_settings) as cp, git_node(agent_pool, tmp_path, hub, cp) as n:
        ws = await n.task("alice")
        session = await n.start("alice-t1", "alice", n.spec(ws))
        assert session.describe()["state"] == "ready", session.describe()
        work = session.cwd
        assert session.containment is not None and session.containment.user is not None
        uid = session.containment.user.uid
        # A checkout on the task branch, every file of it the agent user's.
        assert root_git(work, "symbolic-ref", "HEAD") == "refs/heads/vm-agent/t-1"
        assert (work / "README.md").read_text() == "widgets\n"
        owners = {p.stat().st_uid for p in [work, *work.rglob("*")]}
        assert owners == {uid}
        assert root_git(work, "config", "user.email") == "alice@example.com"
        assert "--socket" in root_git(work, "config", "credential.helper")

        said = await n.prompt(session, path="fix.txt", content="fixed\n", message="fix it")
        assert "git commit: exit 0" in said, said
        head = root_git(work, "rev-parse", "HEAD")

        answer = await n.push(session)
        assert answer == {
            "branch": "vm-agent/t-1",
            "base_branch": "main",
            "head_commit": head,
            "pushed": True,
        }
        repo = hub.state.repository("acme/widgets")
        assert hub.state.branches(repo)["vm-agent/t-1"] == head
        assert hub.state.branches(repo)["main"] != head
        assert await n.push(session) == answer  # the same head: the same answer

        # No token anywhere: the workspace (with .git), the daemon's state (event log,
        # mirrors), the agent's environment, the daemon's log lines, the event log.
        tokens = list(hub.state.tokens)
        assert tokens
        agent_pid = session.agent_pid
        assert agent_pid is not None
        environ = Path(f"/proc/{agent_pid}/environ").read_bytes()
        await n.c.log.flush()
        events = await n.c.log.read(session.id, 0, 100_000)
        places: dict[str, bytes] = {"environ": environ, "logs": caplog.text.encode()}
        places["events"] = b"".join(e.payload.encode() for e in events)
        home = Path(session.containment.user.home)
        for root in (work, n.c.state_dir, home):
            for path in root.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    places[str(path)] = path.read_bytes()
        leaked = [where for where, data in places.items() for t in tokens if t.encode() in data]
        assert leaked == []


async def test_credentials_only_for_the_asking_session_s_repository(
    agent_pool: TestPool, tmp_path: Path, hub: Hub, cp_settings: ControlPlaneSettings
) -> None:
    async with running(cp_settings) as cp, git_node(agent_pool, tmp_path, hub, cp) as n:
        ws = await n.task("alice")
        mine = await n.start("alice-a", "alice", n.spec(ws))
        # Alice's second session (the same agent user, another cgroup), and Bob's.
        same_owner = await n.start("alice-b", "alice", None)
        other_owner = await n.start("bob-a", "bob", None)
        assert mine.containment and same_owner.containment and other_owner.containment
        assert mine.containment.user == same_owner.containment.user
        assert mine.containment.user != other_owner.containment.user

        got = await n.ask_socket(mine, "acme/widgets.git")
        assert got.returncode == 0 and b"password=" in got.stdout, got
        refusals = n.wiring.broker.refusals
        for asker, path in [
            (same_owner, "acme/widgets.git"),
            (other_owner, "acme/widgets.git"),
            (mine, "acme/gadgets.git"),  # another repository of the same installation
            (mine, "globex/secret.git"),
        ]:
            ran = await n.ask_socket(asker, path)
            assert ran.returncode == 0 and b"password" not in ran.stdout, (asker.id, path)
            assert "refused" in ran.stderr, ran
        assert n.wiring.broker.refusals == refusals + 4


@pytest.mark.slow
async def test_refusals_of_the_push(
    agent_pool: TestPool, tmp_path: Path, hub: Hub, cp_settings: ControlPlaneSettings
) -> None:
    async with running(cp_settings) as cp, git_node(agent_pool, tmp_path, hub, cp) as n:
        ws = await n.task("alice")
        repo = hub.state.repository("acme/widgets")
        before = hub.state.branches(repo)
        # The task branch is the remote's default branch (asked of the remote).
        on_main = await n.start("alice-main", "alice", n.spec(ws, task_branch="main"))
        await n.prompt(on_main, path="evil.txt")
        with pytest.raises(JsonRpcError) as refused:
            await n.push(on_main)
        assert refused.value.code == REFUSED and "default branch" in refused.value.message
        # No commit beyond the base: nothing is pushed.
        idle = await n.start("alice-idle", "alice", n.spec(ws, task_branch="vm-agent/idle"))
        answer = await n.push(idle)
        assert answer["pushed"] is False and answer["reason"] == "no commits on the task branch"
        assert hub.state.branches(repo) == before
        # A session without a repository: invalid params.
        bare = await n.start("alice-bare", "alice", None)
        with pytest.raises(JsonRpcError) as invalid:
            await n.push(bare)
        assert invalid.value.code == -32602


async def test_a_clone_that_fails_ends_the_session_in_error_naming_the_repository(
    agent_pool: TestPool, tmp_path: Path, hub: Hub, cp_settings: ControlPlaneSettings
) -> None:
    async with running(cp_settings) as cp, git_node(agent_pool, tmp_path, hub, cp) as n:
        ws = await n.task("alice")
        spec = n.spec(ws, repo="acme/nothing-here")
        session = await n.start("alice-x", "alice", spec)
        described = session.describe()
        assert described["state"] == "error"
        assert spec.url in described["error"] and "git said" in described["error"]
        assert session.agent_pid is None and not session.spawned_pids
        assert not os.listdir(session.cwd)
