"""Usage an agent reports, kept per prompt and per session; `session/close` at a session's end.

Real fake-agent processes: `--usage good` reports like claude-agent-acp (a `usage_update`
with the cumulative cost, the turn's tokens in the prompt's answer), `--usage bad` reports
hostile numbers, `--close` advertises `sessionCapabilities.close` and records each call.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from tests.session.harness import fake, running, text_prompt
from vm_agent.session import agent_run

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_each_prompt_keeps_its_usage_and_the_session_sums_them(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("echo", "--usage", "good")]) as h:
        s = await h.ready("echo")
        first = await s.prompt("p1", text_prompt("hello"))
        second = await s.prompt("p2", text_prompt("abc"))
        # The cost is cumulative in the agent's reports (0.25, then 0.5): each prompt gets
        # only its rise, so nothing is counted twice.
        assert first.usage == {
            "input_tokens": 5,
            "output_tokens": 10,
            "cached_read_tokens": 5,
            "total_tokens": 20,
            "cost": {"USD": 0.25},
        }
        assert second.usage == {
            "input_tokens": 3,
            "output_tokens": 6,
            "cached_read_tokens": 5,
            "total_tokens": 14,
            "cost": {"USD": 0.25},
        }
        finished = await h.of_type(s, "prompt.finished")
        assert [f["usage"] for f in finished] == [first.usage, second.usage]
        # the usage_update itself is relayed untouched, like every update
        updates = [u["update"] for u in await h.of_type(s, "acp.update")]
        assert [u["cost"]["amount"] for u in updates if u["sessionUpdate"] == "usage_update"] == [
            0.25,
            0.5,
        ]
        assert s.describe()["usage"] == {
            "input_tokens": 8,
            "output_tokens": 16,
            "cached_read_tokens": 10,
            "total_tokens": 34,
            "cost": {"USD": 0.5},
        }


async def test_an_agent_without_usage_reports_none(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("echo")]) as h:
        s = await h.ready("echo")
        outcome = await s.prompt("p1", text_prompt("hi"))
        assert outcome.usage is None
        assert "usage" not in (await h.of_type(s, "prompt.finished"))[0]
        assert s.describe()["usage"] == {}


async def test_hostile_usage_numbers_are_dropped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vm_agent.session.usage_meter")
    async with running(tmp_path, [fake("echo", "--usage", "bad")]) as h:
        s = await h.ready("echo")
        outcome = await s.prompt("p1", text_prompt("hi"))
        assert (outcome.outcome, outcome.usage) == ("completed", None)
        assert s.describe()["usage"] == {}
    assert "inputTokens, outputTokens, totalTokens; ignored" in caplog.text


async def test_the_session_total_survives_a_daemon_restart(tmp_path: Path) -> None:
    log_path = tmp_path / "events.sqlite3"
    async with running(tmp_path, [fake("echo", "--usage", "good")], log_path=log_path) as h:
        s = await h.ready("echo")
        await s.prompt("p1", text_prompt("hello"))
        session_id = s.id
    async with running(tmp_path, [fake("echo", "--usage", "good")], log_path=log_path) as h:
        (restored,) = await h.supervisor.restore()
        h.started.append(restored)
        assert restored.id == session_id
        assert restored.describe()["usage"]["total_tokens"] == 20


async def test_stopping_a_session_sends_session_close(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    async with running(tmp_path, [fake("echo", "--close", "--state-dir", str(state))]) as h:
        s = await h.ready("echo")
        await s.prompt("p1", text_prompt("hi"))
        acp_id = s.acp_session_id
        await s.stop_and_wait()
        assert (state / f"closed-{acp_id}").read_text() == acp_id
        assert s.state.value == "stopped"


async def test_no_session_close_to_an_agent_that_did_not_advertise_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    async with running(tmp_path, [fake("echo", "--state-dir", str(state))]) as h:
        s = await h.ready("echo")
        run = s._run  # the run's client is what would send it
        assert run is not None and run.client is not None
        assert run.client.can_close is False
        await s.stop_and_wait()
        assert s.state.value == "stopped"
    assert list(state.glob("closed-*")) == []


async def test_a_daemon_shutdown_does_not_close_sessions(tmp_path: Path) -> None:
    # They are loaded again after the restart: the agent must keep them.
    state = tmp_path / "state"
    state.mkdir()
    async with running(tmp_path, [fake("echo", "--close", "--state-dir", str(state))]) as h:
        await h.ready("echo")
    assert list(state.glob("closed-*")) == []


async def test_an_agent_that_never_answers_session_close_is_stopped_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_run, "CLOSE_TIMEOUT_S", 0.2)
    agent = fake("echo", "--close", "--hang-on", "session/close")
    async with running(tmp_path, [agent]) as h:
        s = await h.ready("echo")
        with anyio.fail_after(20):
            await s.stop_and_wait()
        assert s.state.value == "stopped"
        assert s.agent_pid is None
