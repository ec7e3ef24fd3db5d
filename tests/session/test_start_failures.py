"""An agent that will not start: it asks for authentication, or misses the start deadline.

Real fake-agent processes: `--auth-on` refuses a method with -32000 (as codex-acp and
gemini-cli refuse `session/new` without a key), `--hang-on` never answers one.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.session.harness import fake, running, text_prompt
from vm_agent.session.session import AgentSession, SessionRefused

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ADVERTISED = [{"id": "fake-key", "name": "Fake key", "description": "Set FAKE_AGENT_KEY"}]


async def _settled(s: AgentSession) -> str:
    with anyio.fail_after(30):
        return (await s.wait_settled()).value


@pytest.mark.parametrize(
    ("method", "load"), [("session/new", None), ("session/load", "acp-from-elsewhere")]
)
async def test_authentication_asked_at_start_is_auth_required_with_the_methods(
    tmp_path: Path, method: str, load: str | None
) -> None:
    agent = fake("echo", "--auth-on", method, name="needs-key")
    async with running(tmp_path, [agent]) as h:
        if load is not None:  # a session of the node had it (only such may be loaded)
            await h.log.upsert_session(
                "s-earlier",
                agent="needs-key",
                cwd=str(tmp_path),
                state="stopped",
                acp_session_id=load,
            )
        s = await h.start("needs-key", load_acp_session=load)
        assert await _settled(s) == "error"
        last = (await h.of_type(s, "session.state"))[-1]
        assert last["note"].startswith("the agent needs authentication: ")
        assert f"refused {method}" in last["note"]
        assert last["auth_methods"] == ADVERTISED  # as advertised, without its _meta
        assert s.describe()["auth_methods"] == ADVERTISED
        outcome = s.start_outcome("p1")
        assert outcome is not None
        assert (outcome.outcome, outcome.error_code) == ("auth_required", -32000)
        assert outcome.auth_methods == ADVERTISED
        assert "could not be started" in (outcome.reason or "")
        with pytest.raises(SessionRefused, match="in error"):
            await s.prompt("p1", text_prompt("hello"))


@pytest.mark.slow
async def test_authentication_asked_by_the_recovery_load_ends_the_prompt_auth_required(
    tmp_path: Path,
) -> None:
    state = str(tmp_path / "agent")
    agent = fake("crash-mid-prompt", "--once", "--state-dir", state, "--auth-on", "session/load")
    async with running(tmp_path, [agent]) as h:
        s = await h.ready("crash-mid-prompt")
        outcome = await s.prompt("p1", text_prompt("crash, then ask for a key"))
        assert (outcome.outcome, outcome.error_code) == ("auth_required", -32000)
        assert outcome.auth_methods == ADVERTISED
        assert "session/load" in (outcome.reason or "")
        assert s.state.value == "error"
        (report,) = await h.of_type(s, "agent.crash_report")
        assert report["recovered"] is False
        assert "Authentication required" in (report["recovery_error"] or "")
        assert len(s.spawned_pids) == 2  # never retried: a new process would ask again


@pytest.mark.parametrize("method", ["initialize", "session/new"])
async def test_a_start_that_hangs_ends_at_the_start_deadline(tmp_path: Path, method: str) -> None:
    agent = fake("echo", "--hang-on", method, name="hangs")
    async with running(tmp_path, [agent], start_timeout_s=1.0) as h:
        s = await h.start("hangs")
        assert await _settled(s) == "error"
        assert f"did not answer {method} within 1s" in (s.machine.error or "")
        outcome = s.start_outcome("p1")
        assert outcome is not None and outcome.outcome == "timeout"
        assert outcome.auth_methods is None
        last = (await h.of_type(s, "session.state"))[-1]
        assert "never answering" in last["stderr_tail"]  # the agent's own words
        assert "auth_methods" not in last
        assert s.agent_pid is None  # stopped; the harness checks no process is left


async def test_auth_required_from_a_prompt_carries_the_methods(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("auth-required")]) as h:
        s = await h.ready("auth-required")
        outcome = await s.prompt("p1", text_prompt("hi"))
        assert (outcome.outcome, outcome.error_code) == ("auth_required", -32000)
        assert [m["id"] for m in outcome.auth_methods or []] == ["fake-login"]
        (finished,) = await h.of_type(s, "prompt.finished")
        assert finished["auth_methods"] == outcome.auth_methods
        assert "auth_methods" not in s.describe()  # the session itself is fine
