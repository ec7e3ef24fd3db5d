"""A control plane acting as the App against the GitHub stand-in, dispatching to a fake
node (tests/github/fake_node.py) on loopback, for a task's repository end to end."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from control_plane.app import create_app, serve_control_plane
from control_plane.dispatch.addresses import record_address
from control_plane.dispatch.loop import DispatchSettings
from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import Running
from tests.github.fake_node import FakeNode, fake_node
from tests.github.test_git_token_api import link

FAST = DispatchSettings(pass_interval_s=0.05, lease_s=10, resend_after_s=2, call_limit_s=10)
WAIT_S = 60.0
NODE = "n1"


@dataclass
class Delivering:
    cp: Running
    node: FakeNode

    async def submit(self, user: str = "alice", **body: Any) -> httpx.Response:
        return await self.cp.client.post("/api/tasks", json=body, headers=self.cp.user(user))

    async def task(self, task_id: str, user: str = "alice") -> dict[str, Any]:
        r = await self.cp.client.get(f"/api/tasks/{task_id}", headers=self.cp.user(user))
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    async def until(
        self, task_id: str, check: Callable[[dict[str, Any]], bool], user: str = "alice"
    ) -> dict[str, Any]:
        """The task once `check` holds (each change polled, not slept on)."""
        found: dict[str, Any] = {}
        with anyio.move_on_after(WAIT_S):
            while not check(found := await self.task(task_id, user)):
                await anyio.sleep(0.05)
            return found
        raise AssertionError(f"task {task_id} never passed the check: {found}")

    async def ended(self, task_id: str, user: str = "alice") -> dict[str, Any]:
        """The task once it ended and its session on the node was stopped."""

        def stopped(t: dict[str, Any]) -> bool:
            session = self.node.sessions.get(t.get("sessionId") or "")
            return t.get("timings", {}).get("endedAt") is not None and (
                session is None or session["state"] == "stopped"
            )

        return await self.until(task_id, stopped, user)


def with_git(settings: ControlPlaneSettings, git_url: str) -> ControlPlaneSettings:
    return settings.model_copy(update={"github_git_url": git_url})


@asynccontextmanager
async def delivering(
    settings: ControlPlaneSettings, tmp_path: Path, *, users: tuple[str, ...] = ("alice",)
) -> AsyncIterator[Delivering]:
    """The control plane, its dispatcher and the fake node `n1` (ready, its address
    known), each of `users` linked (proven) to the acme installation."""
    app = create_app(settings, dispatch=FAST)
    plane = app.state.plane
    try:
        async with (
            serve_control_plane(settings, app=app) as url,
            httpx.AsyncClient(base_url=url, timeout=20) as client,
            fake_node(NODE, tmp_path / "node") as node,
        ):
            cp = Running(url, plane, client)
            node.control_plane = url
            node.callback_token = plane.tokens.mint_callback_token(NODE)
            await cp.ready(NODE)
            record_address(plane.engine, NODE, node.url, "/srv/workspaces", time.time())
            for user in users:
                link(cp, user)
            yield Delivering(cp, node)
    finally:
        plane.close()
