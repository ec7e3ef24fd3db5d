"""A node's side of a task repository, for real: the supervisor with containment (pool users,
session cgroups), the credential socket served by the daemon's own wiring, tokens through the
callback client from a real control plane whose GitHub App is the stand-in."""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from tests.containment import pool as test_pool
from tests.containment.harness import Contained, contained
from tests.containment.pool import TestPool, fake_agent_argv, require_cgroup_v2, require_root
from tests.control_plane.harness import Running
from tests.github.conftest import Hub
from tests.github.test_git_token_api import link, task_on
from vm_agent.control_link.client import ControlPlaneClient
from vm_agent.control_link.token import CallbackTokenStore
from vm_agent.daemon.git_wiring import GitWiring, wire_git
from vm_agent.gitwork.run import Ran, run_git
from vm_agent.gitwork.spec import RepositorySpec
from vm_agent.process.catalog import AgentSpec
from vm_agent.server import push_method
from vm_agent.session.session import AgentSession

AUTHOR = {"name": "Alice Example", "email": "alice@example.com"}


def commit_agent() -> AgentSpec:
    return AgentSpec(name="commit", command=fake_agent_argv("--scenario", "commit"))


def helper_as_agents() -> tuple[str, ...]:
    """The credential helper as pool users can start it (the pool's copy of vm_agent)."""
    python = test_pool._AGENT_PYTHON[0]
    boot = (
        f"import sys; sys.path[:0] = {list(python.paths)!r}; "
        "from vm_agent.gitwork.helper import main; sys.exit(main())"
    )
    return (python.python, "-I", "-c", boot)


@dataclass
class GitNode:
    c: Contained
    wiring: GitWiring
    hub: Hub
    cp: Running
    node: str

    async def task(self, user: str, repo: str = "acme/widgets") -> str:
        """A task of ``user`` placed on this node with ``repo``; its workspace id."""
        link(self.cp, user)
        node, ws = await task_on(self.cp, user, repo)
        assert node == self.node
        return ws

    def spec(self, ws: str, repo: str = "acme/widgets", **kw: Any) -> RepositorySpec:
        fields: dict[str, Any] = {
            "workspace_id": ws,
            "url": f"{self.hub.url}/{repo}.git",
            "base_branch": None,
            "task_branch": "vm-agent/t-1",
            "author": AUTHOR,
        }
        return RepositorySpec.model_validate({**fields, **kw})

    async def start(self, workdir: str, owner: str, spec: RepositorySpec | None) -> AgentSession:
        # The pool's workspaces outlive a test: each test's directories are new.
        where = self.c.workspace(f"{workdir}-{uuid.uuid4().hex[:8]}")
        session = await self.c.supervisor.start_session(
            "commit", where, owner=owner, repository=spec
        )
        self.c.started.append(session)
        with anyio.fail_after(120):
            await session.wait_settled()
        return session

    async def prompt(self, session: AgentSession, **asked: Any) -> str:
        prompt = [{"type": "text", "text": json.dumps(asked)}]
        with anyio.fail_after(120):
            outcome = await session.prompt(f"p{len(session.outcomes) + 1}", prompt)
        assert outcome.outcome == "completed", outcome
        await self.c.log.flush()
        events = await self.c.log.read(session.id, 0, 100_000)
        return "".join(
            e.data["update"]["content"]["text"]
            for e in events
            if e.type == "acp.update"
            and e.data["update"].get("sessionUpdate") == "agent_message_chunk"
        )

    async def push(self, session: AgentSession) -> dict[str, Any]:
        handler = push_method.handlers(self.c.supervisor.get, self.c.supervisor)["workspace/push"]
        answer: dict[str, Any] = await handler({"session_id": session.id})
        return answer

    async def ask_socket(self, session: AgentSession, url_path: str) -> Ran:
        """The credential helper, run by a real process in ``session``'s cgroup as its user."""
        host = self.hub.url.removeprefix("http://")
        request = f"protocol=http\nhost={host}\npath={url_path}\n\n"
        helper = self.wiring.setup.helper_config().removeprefix("!")
        script = f"printf '%s' {shlex.quote(request)} | {helper} get"
        assert session.containment is not None
        return await run_git(
            ["sh", "-c", script],
            cwd=session.cwd,
            env={"PATH": "/usr/bin:/bin", "HOME": "/"},
            launcher=session.containment,
            timeout_s=60,
        )


def root_git(repo: Path, *args: str) -> str:
    """git as root on a repository it does not own (a test looking, never the daemon)."""
    done = subprocess.run(
        ["git", "-c", f"safe.directory={repo}", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"},
    )
    return done.stdout.strip()


@asynccontextmanager
async def git_node(
    pool: TestPool, tmp_path: Path, hub: Hub, cp: Running, node: str = "n1"
) -> AsyncIterator[GitNode]:
    require_root()
    require_cgroup_v2()
    await cp.ready(node, cpus=16, mem_gb=64)
    token = cp.plane.tokens.mint_callback_token(node)
    store = CallbackTokenStore(tmp_path / "callback-token", token)
    client = ControlPlaneClient(cp.url, node, store)
    socket_path = pool.base / f"git-{uuid.uuid4().hex[:8]}" / "credential.sock"
    try:
        async with contained(pool, tmp_path, [commit_agent()]) as c:
            wiring = wire_git(
                socket_path=socket_path,
                state_dir=c.state_dir,
                supervisor=c.supervisor,
                client=client,
                redactor=c.supervisor.redactor,
                containment=c.containment,
                helper=helper_as_agents(),
            )
            async with anyio.create_task_group() as tg:
                await tg.start(wiring.broker.serve)
                try:
                    yield GitNode(c, wiring, hub, cp, node)
                finally:
                    tg.cancel_scope.cancel()
    finally:
        await client.aclose()
        socket_path.unlink(missing_ok=True)
        socket_path.parent.rmdir()
