"""A node that never reports ready: deleted at its provider (the Hetzner stand-in), and the
task placed on it (submitted through the API, placed by the real placement) placed again,
once: a second node is asked for and made; when that one never reports either, the task
fails with the reason and no third node is asked for. On SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import Engine, select

from control_plane.app import create_app, serve_control_plane
from control_plane.dispatch.loop import DispatchSettings
from control_plane.dispatch.nodes import NodeSettings
from control_plane.dispatch.replace import place_again
from control_plane.providers.lifecycle import Step
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import agent_sessions, node_requests, workspaces
from tests.clock import FakeClock
from tests.providers.hetzner_standin import StandIn, serving
from tests.providers.test_node_loop import SETTINGS, TOKEN, loop, phase

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
TASK = {"agent": "claude", "prompt": "hi", "provider": "hetzner", "requirements": {"minVcpu": 1}}


@pytest.fixture
async def api() -> AsyncIterator[tuple[StandIn, str]]:
    standin = StandIn(token=TOKEN)
    async with serving(standin) as endpoint:
        yield standin, endpoint


def where(engine: Engine) -> tuple[str, str | None]:
    """The task's workspace's node, and its agent session's."""
    with engine.connect() as conn:
        ws_node = conn.execute(select(workspaces.c.node_id)).scalar_one()
        session_node = conn.execute(select(agent_sessions.c.node_id)).scalar()
    return str(ws_node), session_node


async def test_a_node_never_ready_is_deleted_and_its_task_placed_again_once(
    settings: ControlPlaneSettings, api: tuple[StandIn, str]
) -> None:
    standin, endpoint = api
    clock = FakeClock(time.time())
    # this test takes every lifecycle step itself; nothing else moves the task meanwhile
    app = create_app(
        settings,
        clock=clock,
        dispatch=DispatchSettings(enabled=False),
        node_settings=NodeSettings(enabled=False),
    )
    plane = app.state.plane
    engine = plane.engine

    def user() -> dict[str, str]:  # minted at the clock's time: it moves past a token's life
        return {"Authorization": f"Bearer {plane.tokens.mint_user_token('alice')}"}

    try:
        async with (
            serve_control_plane(settings, app=app) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            r = await client.post("/api/tasks", json=TASK, headers=user())
            assert r.status_code == 201, r.text
            task_id = r.json()["taskId"]
            first, _ = where(engine)
            nl = loop(engine, endpoint, clock)
            assert (await nl.pass_once())[first].step is Step.CREATE
            assert len(standin.live()) == 1

            clock.advance(SETTINGS.ready_deadline_s)  # it never says ready
            decided = await nl.pass_once()
            assert (decided[first].step, decided[first].replace_tasks) == (Step.DELETE, True)
            assert standin.live() == []
            second, session_node = where(engine)
            assert second != first and session_node in (None, second)
            with engine.connect() as conn:
                asked = conn.execute(
                    select(node_requests.c.replaces).where(node_requests.c.node_id == second)
                ).scalar_one()
            assert asked == first
            # taken again (a replica cut short before it recorded the delete): no change
            again = place_again(engine, first, "again", clock())
            assert (again.moved, again.failed) == ([], [])
            assert where(engine)[0] == second

            decided = await nl.pass_once()
            assert decided[second].step is Step.CREATE  # the second node is made
            (vm,) = standin.live()
            assert vm["labels"]["vm-agent/node"] == second
            r = await client.get(f"/api/tasks/{task_id}", headers=user())
            assert r.json()["status"] in ("queued", "waiting_for_node")

            clock.advance(SETTINGS.ready_deadline_s)  # nor does the second
            decided = await nl.pass_once()
            assert decided[second].step is Step.DELETE
            assert standin.live() == []
            r = await client.get(f"/api/tasks/{task_id}", headers=user())
            task = r.json()
            assert task["status"] == "failed", task
            assert task["outcome"] == {
                "kind": "no_node",
                "reason": f"no node became ready: node {second}: not ready within 600 s",
            }
            assert where(engine)[0] == second  # not moved a second time
            await nl.pass_once()
            await nl.pass_once()
            assert [c.method for c in standin.calls].count("POST") == 2  # no third node
            assert phase(engine, first) in ("deleting", "gone")
    finally:
        plane.close()
