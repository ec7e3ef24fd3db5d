"""Usage through the whole stack: the fake agent reports usage (like claude-agent-acp) on a
real daemon, the outbox carries each `prompt.finished` to the control plane, and the task
(`GET /api/tasks/{id}`) and its owner (`GET /api/usage`) show the sums. A hostile node's
numbers are left out with a log line, never a 500. The task's end closes the agent's
session (`session/close`, the fake agent advertising it). SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from control_plane.storage.db import agent_sessions
from tests.daemon.harness import NODE
from tests.dispatch.harness import Stack, stack
from vm_agent.process.catalog import fake_agent_command

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ONE = {"inputTokens": 5, "outputTokens": 10, "cachedReadTokens": 5, "totalTokens": 20}


@pytest.fixture
async def s(tmp_path: Path, database_url: str) -> AsyncIterator[Stack]:
    state = tmp_path / "agent-state"
    command = fake_agent_command(
        "--scenario", "echo", "--usage", "good", "--close", "--state-dir", str(state)
    )
    quoted = ", ".join(f'"{a}"' for a in command)
    extra = f"[agents.fake-usage]\ncommand = [{quoted}]\n"
    async with stack(tmp_path, database_url, extra_agents=extra) as st:
        yield st


async def _usage(s: Stack, user: str = "alice", query: str = "") -> Any:
    r = await s.client.get(f"/api/usage{query}", headers=s.user(user))
    assert r.status_code == 200, r.text
    return r.json()


def _admin(s: Stack) -> dict[str, str]:
    token = s.plane.tokens.mint_user_token("root", admin=True)
    return {"Authorization": f"Bearer {token}"}


async def test_usage_is_summed_on_the_task_and_the_user_and_the_session_closed(
    s: Stack, tmp_path: Path
) -> None:
    await s.submit(taskId="u1", agent="fake-usage", prompt="hello", followUps=True)
    await s.until("u1", "awaiting_follow_up")
    r = await s.client.post("/api/tasks/u1/prompts", json={"prompt": "hello"}, headers=s.user())
    assert r.status_code == 202, r.text
    two = {k: 2 * v for k, v in ONE.items()} | {"cost": {"USD": 0.5}}
    # the outbox brings the second prompt.finished in its own time
    done = await s.eventually("u1", lambda t: t.get("usage") == two)
    assert done["usage"] == two
    assert await _usage(s) == {"owner": "alice", "tasks": 1, "usage": two}
    # another user sees only their own (nothing), even naming alice
    assert await _usage(s, "bob") == {"owner": "bob", "tasks": 0, "usage": {}}
    assert (await _usage(s, "bob", "?owner=alice"))["owner"] == "bob"
    r = await s.client.get("/api/usage?owner=alice", headers=_admin(s))
    assert (r.status_code, r.json()["usage"]) == (200, two)

    # The task's end stops its session: the agent is told session/close first.
    r = await s.client.post("/api/tasks/u1/close", headers=s.user())
    assert r.status_code == 200, r.text
    events = await s.events_until("u1", "session.state")
    acp_ids = {e["data"].get("acp_session_id") for e in events if e["type"] == "session.state"}
    acp_ids.discard(None)
    (acp_id,) = acp_ids
    closed = tmp_path / "agent-state" / f"closed-{acp_id}"
    with anyio.fail_after(60):
        while not closed.exists():
            await anyio.sleep(0.05)


HOSTILE: list[Any] = [
    {"input_tokens": -5, "output_tokens": "many", "total_tokens": 10**30},
    {"cached_read_tokens": True, "cost": {"USD": -1, "usd": 5, "EUR": "x", "XXXX": 1}},
    {"cost": 1e300},
    "lots",
    [1, 2, 3],
    {"input_tokens": 2**70},
]


async def test_a_hostile_node_s_numbers_are_ignored_never_a_500(
    s: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="control_plane.dispatch.usage")
    await s.submit(taskId="u2", agent="fake-usage", prompt="hello")
    done = await s.eventually("u2", lambda t: t.get("usage") == ONE | {"cost": {"USD": 0.25}})
    # A session of the task's workspace whose node reports absurd usage (and one prompt
    # it already reported, again: counted once).
    with s.plane.engine.begin() as conn:
        conn.execute(
            agent_sessions.insert().values(
                session_id="s-evil", node_id=NODE, agent="fake-usage", owner="alice",
                workspace_id=done["workspaceId"], created_by="test", created_at=time.time(),
            )
        )  # fmt: skip
    batch = [
        {
            "session_id": "s-evil",
            "seq": i + 1,
            "ts": 1.0,
            "type": "prompt.finished",
            "data": {"prompt_id": f"evil-{i}", "outcome": "completed", "usage": usage},
        }
        for i, usage in enumerate(HOSTILE)
    ]
    good = {"input_tokens": 1, "cost": {"USD": 0.5}}
    batch += [
        {"session_id": "s-evil", "seq": 100 + i, "ts": 1.0, "type": "prompt.finished",
         "data": {"prompt_id": "twice", "outcome": "completed", "usage": good}}
        for i in range(2)
    ]  # fmt: skip
    callback = {"Authorization": f"Bearer {s.plane.tokens.mint_callback_token(NODE)}"}
    r = await s.client.post(f"/api/nodes/{NODE}/events", json={"events": batch}, headers=callback)
    assert r.status_code == 200, r.text
    seen = await s.task("u2")
    assert seen["usage"] == {
        **ONE,
        "inputTokens": ONE["inputTokens"] + 1,
        "cost": {"USD": 0.75},
    }
    assert (await _usage(s))["usage"] == seen["usage"]
    assert "node " + NODE in caplog.text and "bad usage" in caplog.text
