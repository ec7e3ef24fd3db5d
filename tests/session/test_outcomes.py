"""Every outcome of docs/outcomes.md, with real fake-agent processes.

Each test checks the outcome, the state sequence, the crash report where there is one,
and (in the harness) that no process of any agent group is left.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.session.harness import fake, held_at_its_permission, running, text_prompt
from vm_agent.core.machine import SessionPolicy
from vm_agent.session.session import SessionRefused

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_completed(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("echo", "--chunks", "4")]) as h:
        s = await h.ready("echo")
        outcome = await s.prompt("p1", text_prompt("hello session"))
        assert (outcome.outcome, outcome.stop_reason) == ("completed", "end_turn")
        updates = await h.of_type(s, "acp.update")
        text = "".join(u["update"]["content"]["text"] for u in updates)
        assert text == "hello session"
        assert await h.states(s) == ["starting", "ready", "prompting", "ready"]
        kinds = [e.type for e in await h.events(s)]
        assert (
            kinds.index("prompt.started")
            < kinds.index("acp.update")
            < kinds.index("prompt.finished")
        )
        # the same prompt id returns the same outcome and does not run again
        assert await s.prompt("p1", text_prompt("again")) == outcome
        assert len(await h.of_type(s, "prompt.started")) == 1


async def test_a_second_prompt_while_one_runs_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("tools")]) as h:  # AskPolicy: held until answered
        s = await h.ready("tools")
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("use your tools"))
            pending = await held_at_its_permission(s)
            with pytest.raises(SessionRefused, match="already running"):
                await s.prompt("p2", text_prompt("another"))
            s.permissions.respond(pending.request_id, "allow")  # type: ignore[attr-defined]
        assert s.outcomes["p1"].outcome == "completed"
        assert "p2" not in s.outcomes


async def test_cancel_honoured_keeps_the_same_process(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("slow", "--chunks", "50", "--delay-ms", "100")]) as h:
        s = await h.ready("slow")
        pid = s.agent_pid
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("a long answer " * 10))
            with anyio.fail_after(10):
                while not await h.of_type(s, "acp.update"):
                    await anyio.sleep(0.05)
            await s.cancel()
        outcome = s.outcomes["p1"]
        assert (outcome.outcome, outcome.stop_reason) == ("cancelled", "cancelled")
        assert await h.states(s) == ["starting", "ready", "prompting", "cancelling", "ready"]
        assert s.agent_pid == pid


@pytest.mark.slow
async def test_cancel_ignored_stops_the_agent_and_loads_the_session_again(tmp_path: Path) -> None:
    agent = fake("ignore-cancel", "--delay-ms", "50", "--state-dir", str(tmp_path / "agent"))
    policy = SessionPolicy(cancel_grace_s=0.5)
    async with running(tmp_path, [agent], policy=policy) as h:
        s = await h.ready("ignore-cancel")
        pid = s.agent_pid
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("work"))
            with anyio.fail_after(10):
                while not await h.of_type(s, "acp.update"):
                    await anyio.sleep(0.05)
            await s.cancel()
        assert s.outcomes["p1"].outcome == "cancelled"
        assert "cancel" in (s.outcomes["p1"].reason or "")
        with anyio.fail_after(20):
            await s.wait_settled()
        states = await h.states(s)
        assert states == ["starting", "ready", "prompting", "cancelling", "recovering", "ready"]
        last = (await h.of_type(s, "session.state"))[-1]
        assert last["note"] == "a new agent process loaded the session"
        assert s.agent_pid not in (None, pid)
        assert not await h.of_type(s, "agent.crash_report")  # we stopped it: not a crash


@pytest.mark.slow
async def test_timeout_on_a_hung_agent(tmp_path: Path) -> None:
    agent = fake("hang", "--state-dir", str(tmp_path / "agent"))
    async with running(tmp_path, [agent], policy=SessionPolicy(prompt_timeout_s=1.0)) as h:
        s = await h.ready("hang")
        outcome = await s.prompt("p1", text_prompt("never answered"))
        assert outcome.outcome == "timeout"
        assert "deadline" in (outcome.reason or "")
        with anyio.fail_after(20):
            assert (await s.wait_settled()).value == "ready"
        assert (await h.states(s))[-3:] == ["prompting", "recovering", "ready"]


@pytest.mark.slow
async def test_no_output_deadline(tmp_path: Path) -> None:
    agent = fake("hang", "--state-dir", str(tmp_path / "agent"))
    policy = SessionPolicy(no_output_timeout_s=0.8)
    async with running(tmp_path, [agent], policy=policy) as h:
        s = await h.ready("hang")
        outcome = await s.prompt("p1", text_prompt("silence"))
        assert outcome.outcome == "timeout"
        assert "no output" in (outcome.reason or "") or "deadline" in (outcome.reason or "")


@pytest.mark.parametrize(
    ("scenario", "exit_code", "signal_name"),
    [("crash-mid-prompt", 1, None), ("sigkill-mid-prompt", None, "SIGKILL")],
)
@pytest.mark.slow
async def test_recovered_with_load_replay(
    tmp_path: Path, scenario: str, exit_code: int | None, signal_name: str | None
) -> None:
    agent = fake(scenario, "--state-dir", str(tmp_path / "agent"), "--once", "--chunks", "4")
    async with running(tmp_path, [agent]) as h:
        s = await h.ready(scenario)
        first_pid = s.agent_pid
        await s.prompt("p0", text_prompt("earlier history"))  # crashes: --once
        assert s.outcomes["p0"].outcome == "recovered"
        assert (await s.wait_settled()).value == "ready"
        assert s.agent_pid not in (None, first_pid)
        (report,) = await h.of_type(s, "agent.crash_report")
        assert report["recovered"] is True
        assert report["classification"] == "resumable"
        assert report["exit_code"] == exit_code
        assert report["signal_name"] == signal_name
        assert report["last_method"] == "session/prompt"
        assert report["agent"] == scenario and report["session_id"] == s.id
        assert report["uptime_s"] > 0 and report["message"]
        if exit_code is not None:
            assert "crashing mid-prompt" in report["stderr_tail"]
        # the replayed history was not re-broadcast as new output
        assert s.replayed_updates > 0
        updates_before = len(await h.of_type(s, "acp.update"))
        assert updates_before == 2  # the chunks sent before the crash, once
        # the recovered session works, with the same ACP session id
        acp_id = s.acp_session_id
        outcome = await s.prompt("p1", text_prompt("after recovery"))
        assert outcome.outcome == "completed"
        assert s.acp_session_id == acp_id
        assert (await h.states(s))[:5] == ["starting", "ready", "prompting", "recovering", "ready"]


@pytest.mark.slow
async def test_crashed_when_the_agent_cannot_load(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("no-load")]) as h:
        s = await h.ready("no-load")
        outcome = await s.prompt("p1", text_prompt("doomed"))
        assert outcome.outcome == "crashed"
        assert "does not support session/load" in (outcome.reason or "")
        assert s.state.value == "error"
        (report,) = await h.of_type(s, "agent.crash_report")
        assert (report["recovered"], report["classification"]) == (False, "crashed")
        assert report["exit_code"] == 1
        assert await h.states(s) == ["starting", "ready", "prompting", "error"]
        with pytest.raises(SessionRefused, match="in error"):
            await s.prompt("p2", text_prompt("again"))


@pytest.mark.slow
async def test_crashed_when_every_load_crashes(tmp_path: Path) -> None:
    agent = fake("crash-on-load", "--state-dir", str(tmp_path / "agent"))
    policy = SessionPolicy(restart_budget=3, backoff_base_s=0.05)
    async with running(tmp_path, [agent], policy=policy) as h:
        s = await h.ready("crash-on-load")
        outcome = await s.prompt("p1", text_prompt("x"))
        assert outcome.outcome == "crashed"
        assert "budget of 3 spent" in (outcome.reason or "")
        (report,) = await h.of_type(s, "agent.crash_report")
        assert report["recovered"] is False
        assert "session/load" in (report["recovery_error"] or "")
        assert len(s.spawned_pids) == 4  # the first process and three recovery attempts
        assert s.state.value == "error"


@pytest.mark.slow
async def test_crashed_when_the_restart_budget_is_spent(tmp_path: Path) -> None:
    agent = fake("crash-mid-prompt", "--state-dir", str(tmp_path / "agent"))
    policy = SessionPolicy(restart_budget=2, min_uptime_s=0.0, backoff_base_s=0.05)
    async with running(tmp_path, [agent], policy=policy) as h:
        s = await h.ready("crash-mid-prompt")
        kinds = []
        for i in range(3):
            kinds.append((await s.prompt(f"p{i}", text_prompt("crash me"))).outcome)
            await s.wait_settled()
        assert kinds == ["recovered", "recovered", "crashed"]
        assert "budget is spent" in (s.outcomes["p2"].reason or "")
        reports = await h.of_type(s, "agent.crash_report")
        assert [r["recovered"] for r in reports] == [True, True, False]


async def test_exit_on_start_puts_the_session_in_error_with_the_agents_words(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, [fake("exit-on-start", "--exit-code", "7")]) as h:
        s = await h.start("exit-on-start")
        with anyio.fail_after(20):
            assert (await s.wait_settled()).value == "error"
        last = (await h.of_type(s, "session.state"))[-1]
        assert "exited with code 7" in last["note"]
        assert "during initialize" in last["note"]
        assert "exiting on start" in last["stderr_tail"]


async def test_unstartable_command(tmp_path: Path) -> None:
    from vm_agent.process.catalog import AgentSpec

    async with running(tmp_path, [AgentSpec(name="ghost", command=("/no/such/agent",))]) as h:
        s = await h.start("ghost")
        with anyio.fail_after(10):
            assert (await s.wait_settled()).value == "error"
        assert "No such file" in (s.machine.error or "")


async def test_auth_required_keeps_the_session_up(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("auth-required")]) as h:
        s = await h.ready("auth-required")
        pid = s.agent_pid
        outcome = await s.prompt("p1", text_prompt("hi"))
        assert (outcome.outcome, outcome.error_code) == ("auth_required", -32000)
        assert s.state.value == "ready" and s.agent_pid == pid
        assert (await h.of_type(s, "session.state"))[-1]["note"] == "the agent needs authentication"
        assert not await h.of_type(s, "agent.crash_report")


async def test_failed_on_another_agent_error(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("prompt-error")]) as h:
        s = await h.ready("prompt-error")
        outcome = await s.prompt("p1", text_prompt("hi"))
        assert (outcome.outcome, outcome.error_code) == ("failed", -32603)
        assert "backend is unavailable" in (outcome.reason or "")
        assert s.state.value == "ready"


@pytest.mark.slow
async def test_recovery_uses_session_resume_when_advertised(tmp_path: Path) -> None:
    agent = fake("crash-mid-prompt", "--state-dir", str(tmp_path / "agent"), "--once", "--resume")
    async with running(tmp_path, [agent]) as h:
        s = await h.ready("crash-mid-prompt")
        assert (await s.prompt("p0", text_prompt("some history"))).outcome == "recovered"
        assert s.replayed_updates == 0  # resume sends no replay at all
        await s.wait_settled()
        last = (await h.of_type(s, "session.state"))[-1]
        assert last["note"] == "a new agent process loaded the session"
        assert (await s.prompt("p1", text_prompt("on we go"))).outcome == "completed"


async def test_a_refusal_reaches_every_caller_of_that_prompt_id(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("tools")]) as h:  # AskPolicy: held until answered
        s = await h.ready("tools")
        refused: list[str] = []

        async def second_prompt() -> None:
            try:
                await s.prompt("p2", text_prompt("busy"))
            except SessionRefused as exc:
                refused.append(str(exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("use your tools"))
            pending = await held_at_its_permission(s)
            with anyio.fail_after(5):
                async with anyio.create_task_group() as callers:
                    callers.start_soon(second_prompt)
                    callers.start_soon(second_prompt)
            s.permissions.respond(pending.request_id, "allow")  # type: ignore[attr-defined]
        assert len(refused) == 2 and all("already running" in r for r in refused)
        assert s.outcomes["p1"].outcome == "completed"


async def test_a_cancelled_caller_leaves_the_prompt_running_once(tmp_path: Path) -> None:
    async with running(tmp_path, [fake("tools")]) as h:  # AskPolicy: held until answered
        s = await h.ready("tools")
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.prompt, "p1", text_prompt("keep going"))
            pending = await held_at_its_permission(s)
            tg.cancel_scope.cancel()  # the caller goes away while its prompt runs
        assert s.state.value == "prompting" and "p1" not in s.outcomes
        s.permissions.respond(pending.request_id, "allow")  # type: ignore[attr-defined]
        with anyio.fail_after(20):
            outcome = await s.prompt("p1", text_prompt("keep going"))
        assert outcome.outcome == "completed"
        assert len(await h.of_type(s, "prompt.started")) == 1
        assert await h.states(s) == ["starting", "ready", "prompting", "ready"]


async def test_a_cancel_right_after_the_prompt_never_overtakes_it(tmp_path: Path) -> None:
    policy = SessionPolicy(cancel_grace_s=5.0)
    async with running(
        tmp_path, [fake("slow", "--chunks", "50", "--delay-ms", "100")], policy=policy
    ) as h:
        s = await h.ready("slow")
        pid = s.agent_pid
        for i in range(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(s.prompt, f"p{i}", text_prompt("long " * 20))
                await anyio.sleep(0)
                while s.state.value != "prompting":
                    await anyio.sleep(0)
                await s.cancel()  # at once: the prompt may not be written yet
            outcome = s.outcomes[f"p{i}"]
            assert (outcome.outcome, outcome.stop_reason) == ("cancelled", "cancelled")
        assert s.agent_pid == pid  # the agent honoured each cancel: never force-stopped
