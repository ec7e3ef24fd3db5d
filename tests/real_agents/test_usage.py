"""Issue 25's usage with a real agent: the pinned Claude Code (claude-agent-acp 0.23.1) runs
a task's turn against the Anthropic stand-in, whose every answer reports 12 input tokens and
5 output tokens (`message_start` / `message_delta` usage). claude-agent-acp puts the turn's
summed tokens in the prompt's answer (`usage`, reset at each prompt) and sends a
`usage_update` with the session's cumulative cost (`total_cost_usd`, as Claude Code prices
the model); the task on the control plane shows the sum."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dispatch.harness import stack
from tests.real_agents.agents import CLAUDE, require_real_agents, write_agents_file
from tests.real_agents.harness import WAIT_S, rig
from tests.real_agents.model_api import Reply

pytestmark = [pytest.mark.real_agents, pytest.mark.anyio, pytest.mark.timeout(600)]


@pytest.fixture(autouse=True)
def _real_agents() -> None:
    require_real_agents()


async def test_claude_s_usage_is_summed_on_the_task(tmp_path: Path) -> None:
    async with rig(tmp_path, CLAUDE, [Reply(text="Hello there.")]) as r:
        entry = write_agents_file(tmp_path / "claude.toml", {"claude": r.entry()}).read_text()
        async with stack(tmp_path, extra_agents=entry) as s:
            await s.submit(taskId="u-claude", agent="claude", prompt="Say hello.")
            ends = ("completed", "failed", "crashed", "timed_out", "auth_required")
            done = await s.until("u-claude", *ends, within_s=WAIT_S)
            assert done["status"] == "completed", done
            done = await s.eventually("u-claude", lambda t: bool(t.get("usage")))
            events = await s.events_until("u-claude", "prompt.finished")
    turns = r.script.turns()
    assert len(turns) == 1, turns
    (prompt,) = [e["data"] for e in events if e["type"] == "prompt.finished"]
    # As measured with 0.23.1: the answer's tokens, and a usage_update whose cost Claude
    # Code prices at $3/$15 per million input/output tokens for a model it does not know.
    cost = 12 * 3e-6 + 5 * 15e-6
    assert prompt["usage"]["input_tokens"] == 12
    assert prompt["usage"]["cost"]["USD"] == pytest.approx(cost)
    assert done["usage"] == {
        "inputTokens": 12,
        "outputTokens": 5,
        "cachedReadTokens": 0,
        "cachedWriteTokens": 0,
        "totalTokens": 17,
        "cost": {"USD": pytest.approx(cost)},
    }
