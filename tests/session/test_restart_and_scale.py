"""The log across a daemon restart, and many sessions side by side."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.session.harness import fake, running, text_prompt
from vm_agent.session.session import AgentSession

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def gapless(seqs: list[int]) -> bool:
    return seqs == list(range(1, len(seqs) + 1))


@pytest.mark.slow
async def test_sessions_survive_a_restart_of_the_daemon(tmp_path: Path) -> None:
    state = tmp_path / "agent-state"
    agents = [fake("load-replay", "--state-dir", str(state)), fake("echo")]
    log_path = tmp_path / "state" / "events.sqlite3"
    before: dict[str, list[str]] = {}
    async with running(tmp_path, agents, log_path=log_path) as h:
        a = await h.ready("load-replay")
        b = await h.ready("echo")
        for i in range(3):
            await a.prompt(f"a{i}", text_prompt(f"first life {i}"))
            await b.prompt(f"b{i}", text_prompt(f"other {i}"))
        acp_id = a.acp_session_id
        for s in (a, b):
            before[s.id] = [e.payload for e in await h.events(s)]
    # a new daemon on the same state directory
    async with running(tmp_path, agents, log_path=log_path) as h:
        restored = await h.supervisor.restore()
        assert {s.id for s in restored} == set(before)
        for s in restored:
            events = await h.log.read(s.id, 0, 10_000)
            assert [e.payload for e in events[: len(before[s.id])]] == before[s.id]
            assert gapless([e.seq for e in events])
            assert s.state.value == "stopped"
        again = h.supervisor.get(a.id)
        last = (await h.of_type(again, "session.state"))[-1]
        assert last["recoverable"] is True
        h.started.extend(restored)
        await again.recover()
        with anyio.fail_after(20):
            assert (await again.wait_settled()).value == "ready"
        assert again.acp_session_id == acp_id
        outcome = await again.prompt("a-after", text_prompt("second life"))
        assert outcome.outcome == "completed"
        # the earlier outcomes are known by prompt id after the restart: no second run
        echo = h.supervisor.get(b.id)
        assert echo.state.value == "stopped"
        assert (await echo.prompt("b1", text_prompt("retried"))).outcome == "completed"
        started = [e.data["prompt_id"] for e in await h.events(echo) if e.type == "prompt.started"]
        assert started == ["b0", "b1", "b2"]


@pytest.mark.slow
async def test_twenty_sessions_one_flooding_one_crash_looping(tmp_path: Path) -> None:
    agents = [
        fake("slow", "--chunks", "10", "--delay-ms", "20"),
        fake("flood", "--count", "20000", "--size", "200"),
        fake("crash-mid-prompt", "--state-dir", str(tmp_path / "crashy")),
    ]
    from vm_agent.core.machine import SessionPolicy

    policy = SessionPolicy(restart_budget=100, min_uptime_s=0.0, backoff_base_s=0.01)
    async with running(tmp_path, agents, policy=policy) as h:
        normal = [await h.start("slow") for _ in range(18)]
        flooder = await h.start("flood")
        crasher = await h.start("crash-mid-prompt")
        with anyio.fail_after(60):
            for s in [*normal, flooder, crasher]:
                assert (await s.wait_settled()).value == "ready"

        crash_outcomes: list[str] = []

        async def crash_loop() -> None:
            for i in range(4):
                crash_outcomes.append((await crasher.prompt(f"c{i}", text_prompt("boom"))).outcome)
                await crasher.wait_settled()

        def words(k: int, i: int) -> str:
            # Each session's each prompt says something of its own, echoed back in chunks.
            return f"session {k} prompt {i} " * 3

        async def normal_prompts(s: AgentSession, k: int, n: int) -> None:
            for i in range(n):
                outcome = await s.prompt(f"p{i}", text_prompt(words(k, i)))
                assert outcome.outcome == "completed"

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(crash_loop)
                tg.start_soon(flooder.prompt, "f", text_prompt("flood"))
                for k, s in enumerate(normal):
                    tg.start_soon(normal_prompts, s, k, 3)
        assert crash_outcomes == ["recovered"] * 4
        assert flooder.outcomes["f"].outcome == "completed"
        flood_updates = await h.of_type(flooder, "acp.update")
        assert len(flood_updates) == 20000
        assert [u["update"]["content"]["text"][:8] for u in flood_updates[:3]] == [
            "00000000",
            "00000001",
            "00000002",
        ]
        for k, s in enumerate(normal):
            events = await h.events(s)
            assert gapless([e.seq for e in events])
            finished = [e.data["prompt_id"] for e in events if e.type == "prompt.finished"]
            assert finished == ["p0", "p1", "p2"]
            # each prompt's chunks arrive whole and in order between its start and its end,
            # and they are that prompt's (this session's, this prompt's words), no other's
            answered: dict[str, str] = {}
            chunks: list[str] = []
            for e in events:
                if e.type == "prompt.started":
                    chunks = []
                elif e.type == "acp.update":
                    chunks.append(e.data["update"]["content"]["text"])
                elif e.type == "prompt.finished":
                    answered[e.data["prompt_id"]] = "".join(chunks)
            assert answered == {f"p{i}": words(k, i) for i in range(3)}
