"""Issue 25 with real fake-agent processes: a prompt failed the way claude-agent-acp fails
it on a 529 is sent again under the same prompt id: to a new process that loads the session
when the agent can load sessions, else to the same process; a cancel during the backoff ends
it at once."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.session.harness import fake, running, text_prompt
from vm_agent.core.machine import SessionPolicy
from vm_agent.core.provider_errors import RetryPolicy

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def policy(base_s: float) -> SessionPolicy:
    return SessionPolicy(cancel_grace_s=1.0, retry=RetryPolicy(attempts=3, base_s=base_s))


async def test_two_529s_then_success_in_the_same_process(tmp_path: Path) -> None:
    agent = fake("provider-error", "--fail-times", "2", "--no-load")
    async with running(tmp_path, [agent], policy=policy(0.01)) as h:
        s = await h.ready("provider-error")
        pid = s.agent_pid
        outcome = await s.prompt("p1", text_prompt("hello"))
        assert (outcome.outcome, outcome.stop_reason) == ("completed", "end_turn")
        retries = await h.of_type(s, "prompt.retry")
        assert [(r["prompt_id"], r["attempt"]) for r in retries] == [("p1", 2), ("p1", 3)]
        assert retries[0]["reason"] == "model provider overloaded (529)"
        assert "overloaded_error" in retries[0]["message"]
        assert len(await h.of_type(s, "prompt.started")) == 1
        assert len(await h.of_type(s, "prompt.finished")) == 1
        assert s.agent_pid == pid  # a retry is not a restart
        assert not await h.of_type(s, "agent.crash_report")
        assert await h.states(s) == ["starting", "ready", "prompting", "ready"]


async def test_an_agent_that_loads_gets_the_retry_in_a_new_process(tmp_path: Path) -> None:
    state = ("--state-dir", str(tmp_path / "agent"))
    agent = fake("provider-error", "--fail-times", "1", "--resume", *state)
    async with running(tmp_path, [agent], policy=policy(0.01)) as h:
        s = await h.ready("provider-error")
        pid = s.agent_pid
        outcome = await s.prompt("p1", text_prompt("hello"))
        assert (outcome.outcome, outcome.stop_reason) == ("completed", "end_turn")
        assert s.agent_pid != pid
        assert [r["attempt"] for r in await h.of_type(s, "prompt.retry")] == [2]
        assert len(await h.of_type(s, "prompt.started")) == 1
        assert len(await h.of_type(s, "prompt.finished")) == 1
        assert not await h.of_type(s, "agent.crash_report")  # a retry is no crash
        assert await h.states(s) == [
            "starting", "ready", "prompting", "recovering", "prompting", "ready"
        ]  # fmt: skip
        texts = [u["update"]["content"]["text"] for u in await h.of_type(s, "acp.update")]
        assert "hello" in "".join(texts)


async def test_cancel_during_the_backoff(tmp_path: Path) -> None:
    agent = fake("provider-error", "--fail-times", "1", "--no-load")
    async with running(tmp_path, [agent], policy=policy(60)) as h:
        s = await h.ready("provider-error")
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("hello"))
            with anyio.fail_after(20):
                while not await h.of_type(s, "prompt.retry"):
                    await anyio.sleep(0.02)
            await s.cancel()
        outcome = s.outcomes["p1"]
        assert outcome.outcome == "cancelled"
        assert outcome.reason == "cancelled while waiting to send the prompt again"
        # the session takes the next prompt at once (the agent kept no turn running)
        with anyio.fail_after(20):
            assert (await s.prompt("p2", text_prompt("again"))).outcome == "completed"
