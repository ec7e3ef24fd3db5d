"""A hostile workspace repository cannot make the daemon's push run anything as root, and
a restarted daemon keeps a session's clone and its repository (root, pool users, cgroups)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from control_plane.settings import ControlPlaneSettings
from tests.containment.pool import TestPool
from tests.control_plane.harness import running
from tests.github.conftest import Hub
from tests.gitwork.harness import git_node, root_git
from vm_agent.gitwork.run import run_git
from vm_agent.session.session import AgentSession

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

TRAP = """#!/bin/sh
id -u >> "{marker}"
exit 0
"""


async def as_agent(session: AgentSession, script: str) -> None:
    assert session.containment is not None
    ran = await run_git(
        ["sh", "-c", script],
        cwd=session.cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        launcher=session.containment,
        timeout_s=60,
    )
    assert ran.returncode == 0, ran


async def test_the_push_runs_nothing_of_a_hostile_repository_as_root(
    agent_pool: TestPool, tmp_path: Path, hub: Hub, cp_settings: ControlPlaneSettings
) -> None:
    async with running(cp_settings) as cp, git_node(agent_pool, tmp_path, hub, cp) as n:
        ws = await n.task("alice")
        session = await n.start("alice-hostile", "alice", n.spec(ws))
        work = session.cwd
        marker = work / ".trap-ran-as"
        trap = work / ".trap.sh"
        hooks = work / ".hooks"
        # The agent arms every program git might run: hooks (in .git/hooks and a hooksPath),
        # an fsmonitor, a pack-objects hook, an alternate-refs command, a pager, an editor.
        await n.prompt(session, path="x.txt", content="x\n", message="work")
        await as_agent(
            session,
            f"""set -e
printf '%s' '{TRAP.format(marker=marker)}' > {trap}; chmod 755 {trap}
mkdir -p {hooks}
for h in pre-push post-checkout reference-transaction pre-commit post-commit \\
         pre-auto-gc post-rewrite push-to-checkout update pre-receive post-update; do
  cp {trap} {hooks}/$h; cp {trap} .git/hooks/$h
done
git config core.hooksPath {hooks}
git config core.fsmonitor {trap}
git config uploadpack.packObjectsHook {trap}
git config core.alternateRefsCommand {trap}
git config core.pager {trap}
git config core.editor {trap}
git config credential.helper '!{trap}'
""",
        )
        # The control: root's naive git in that workspace runs the trap as root.
        subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(work), "status"],
            capture_output=True,
            check=False,
        )
        assert "0" in marker.read_text().split(), "the trap does not fire: the test shows nothing"
        marker.write_text("")

        answer = await n.push(session)
        assert answer["pushed"] is True
        repo = hub.state.repository("acme/widgets")
        assert hub.state.branches(repo)["vm-agent/t-1"] == answer["head_commit"]
        ran_as = marker.read_text().split()
        assert "0" not in ran_as, ran_as


async def test_a_restarted_daemon_keeps_the_clone_and_pushes_it(
    agent_pool: TestPool, tmp_path: Path, hub: Hub, cp_settings: ControlPlaneSettings
) -> None:
    async with running(cp_settings) as cp:
        async with git_node(agent_pool, tmp_path, hub, cp) as n:
            ws = await n.task("alice")
            spec = n.spec(ws)
            session = await n.start("alice-kept", "alice", spec)
            await n.prompt(session, path="kept.txt", content="kept\n", message="kept")
            head = root_git(session.cwd, "rev-parse", "HEAD")
            sid, work = session.id, session.cwd
        # The same state directory: the supervisor restores the session from its log.
        async with git_node(agent_pool, tmp_path, hub, cp) as n:
            (restored,) = await n.c.supervisor.restore()
            assert restored.id == sid and restored.repository == spec
            assert root_git(work, "rev-parse", "HEAD") == head
            answer = await n.push(restored)
            assert answer["pushed"] is True and answer["head_commit"] == head
            # A new session on the workdir that holds the clone: kept as it is.
            again = await n.c.supervisor.start_session(
                "commit", work, owner="alice", repository=spec
            )
            n.c.started.append(again)
            assert (await again.wait_settled()).value == "ready"
            assert root_git(work, "rev-parse", "HEAD") == head
            # ... and one for another repository there: refused, the clone untouched.
            other = n.spec(ws, repo="acme/gadgets")
            wrong = await n.c.supervisor.start_session(
                "commit", work, owner="alice", repository=other
            )
            n.c.started.append(wrong)
            assert (await wrong.wait_settled()).value == "error"
            assert "already holds another repository" in wrong.describe()["error"]
            assert root_git(work, "rev-parse", "HEAD") == head
