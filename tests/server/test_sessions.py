"""Sessions over the viewer API: start, prompt, events, idempotent prompts, errors."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.server.harness import RpcError, daemon, fake, text

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_start_prompt_and_events(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer() as v:
        session = await d.start(v, "echo", session_id="s1")
        assert session["session_id"] == "s1"
        assert session["state"] == "ready"
        assert session["agent"] == "echo"
        sub = await v.call("session/subscribe", {"session_id": "s1"})
        assert sub["head_seq"] == session["head_seq"]
        outcome = await v.call(
            "session/prompt", {"session_id": "s1", "prompt": text("hello there"), "prompt_id": "p1"}
        )
        assert outcome == {
            "session_id": "s1",
            "prompt_id": "p1",
            "outcome": "completed",
            "stop_reason": "end_turn",
        }
        finished_seq = d.log.head_seq("s1")
        events = await v.events_until(finished_seq)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        types = [e["type"] for e in events]
        assert "prompt.started" in types and "prompt.finished" in types
        assert types.count("acp.update") >= 1
        finished = next(e for e in events if e["type"] == "prompt.finished")
        assert finished["data"] == outcome
        assert all(e["session_id"] == "s1" for e in events)
        listed = await v.call("session/list")
        [one] = listed["sessions"]
        assert one["session_id"] == "s1" and one["agent"] == "echo"
        assert one["state"] in ("ready", "prompting")
        assert one["head_seq"] >= finished_seq


async def test_same_prompt_id_runs_once(tmp_path: Path) -> None:
    async with daemon(tmp_path, [fake("slow", "--chunks", "4", "--delay-ms", "50")]) as d:
        async with d.viewer() as a, d.viewer() as b:
            await d.start(a, "slow", session_id="s1")
            params = {"session_id": "s1", "prompt": text("one two three four"), "prompt_id": "p"}
            results = []

            async def ask(client: object) -> None:
                results.append(await client.call("session/prompt", params))  # type: ignore[attr-defined]

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask, a)
                tg.start_soon(ask, b)
            assert results[0] == results[1]
            assert results[0]["outcome"] == "completed"
            again = await a.call("session/prompt", params)
            assert again == results[0]
        await d.log.flush()
        events = await d.log.read("s1", 0, 10_000)
        assert [e.type for e in events].count("prompt.started") == 1


async def test_a_viewer_that_leaves_mid_prompt_gets_the_outcome_on_return(tmp_path: Path) -> None:
    async with daemon(tmp_path, [fake("slow", "--chunks", "5", "--delay-ms", "100")]) as d:
        params = {"session_id": "s1", "prompt": text("a b c d e"), "prompt_id": "p-1"}
        async with d.viewer() as v:
            await d.start(v, "slow", session_id="s1")
            await v.send({"jsonrpc": "2.0", "id": 99, "method": "session/prompt", "params": params})
            session = d.supervisor.get("s1")
            with anyio.fail_after(10):
                while session.state.value != "prompting":
                    await anyio.sleep(0.01)
        # Gone mid-prompt: the prompt goes on.
        async with d.viewer() as v:
            outcome = await v.call("session/prompt", params)
        assert outcome["outcome"] == "completed"
        assert outcome["prompt_id"] == "p-1"
        events = await d.log.read("s1", 0, 10_000)
        assert [e.type for e in events].count("prompt.started") == 1


async def test_errors(tmp_path: Path) -> None:
    agent = fake("slow", "--chunks", "3", "--delay-ms", "200")
    async with daemon(tmp_path, [agent]) as d, d.viewer() as v:
        with pytest.raises(RpcError) as err:
            await v.call(
                "session/prompt", {"session_id": "nope", "prompt": text("x"), "prompt_id": "p"}
            )
        assert err.value.code == -32002 and "nope" in err.value.message
        with pytest.raises(RpcError) as err:
            await v.call("session/subscribe", {"session_id": "ghost"})
        assert err.value.code == -32002 and "ghost" in err.value.message
        with pytest.raises(RpcError) as err:
            await v.call("session/start", {"agent": "slow", "cwd": str(d.workdir), "extra": 1})
        assert err.value.code == -32602 and "extra" in err.value.message
        with pytest.raises(RpcError) as err:
            await v.call("session/start", {"agent": "missing", "cwd": str(d.workdir)})
        assert err.value.code == -32602 and "unknown agent" in err.value.message
        with pytest.raises(RpcError) as err:
            await v.call("session/start", {"agent": "slow", "cwd": "relative/dir"})
        assert err.value.code == -32602 and "absolute" in err.value.message
        with pytest.raises(RpcError) as err:
            await v.call("session/frobnicate", {})
        assert err.value.code == -32601
        await d.start(v, "slow", session_id="s1")
        for bad, word in [
            ({"session_id": "s1", "prompt": [], "prompt_id": "p"}, "prompt"),
            ({"session_id": "s1", "prompt": [{"text": "no type"}], "prompt_id": "p"}, "type"),
            ({"session_id": "s1", "prompt": text("x")}, "prompt_id"),
            ({"session_id": "s1", "prompt": "just a string", "prompt_id": "p"}, "prompt"),
        ]:
            with pytest.raises(RpcError) as err:
                await v.call("session/prompt", bad)
            assert err.value.code == -32602 and word in err.value.message, err.value.message
        with pytest.raises(RpcError) as err:
            await v.call("session/prompt", ["positional"])
        assert err.value.code == -32602
        with pytest.raises(RpcError) as err:
            await v.call("permission/respond", {"session_id": "s1", "request_id": "r"})
        assert err.value.code == -32602
        with pytest.raises(RpcError) as err:
            await v.call(
                "permission/respond",
                {"session_id": "s1", "request_id": "r", "option_id": "allow"},
            )
        assert err.value.code == -32002  # no such pending request
        with pytest.raises(RpcError) as err:
            await v.call("session/subscribe", {"session_id": "s1", "after_seq": 10_000})
        assert err.value.code == -32602

        # A second prompt while one runs is refused, with the reason.
        first = {"session_id": "s1", "prompt": text("a b c"), "prompt_id": "p1"}
        await v.send({"jsonrpc": "2.0", "id": "first", "method": "session/prompt", "params": first})
        session = d.supervisor.get("s1")
        with anyio.fail_after(10):
            while session.state.value != "prompting":
                await anyio.sleep(0.01)
        with pytest.raises(RpcError) as err:
            await v.call(
                "session/prompt", {"session_id": "s1", "prompt": text("b"), "prompt_id": "p2"}
            )
        assert err.value.code == -32001
        assert "already running" in err.value.message
        assert (await v.answer("first"))["result"]["outcome"] == "completed"


@pytest.mark.slow
async def test_cancel_stop_and_recover(tmp_path: Path) -> None:
    agent = fake("hang", "--state-dir", str(tmp_path / "agent-state"))
    async with daemon(tmp_path, [agent]) as d, d.viewer() as v:
        await d.start(v, "hang", session_id="s1")
        params = {"session_id": "s1", "prompt": text("wait"), "prompt_id": "p"}
        await v.send({"jsonrpc": "2.0", "id": "p", "method": "session/prompt", "params": params})
        session = d.supervisor.get("s1")
        with anyio.fail_after(10):
            while session.state.value != "prompting":
                await anyio.sleep(0.01)
        assert await v.call("session/cancel", {"session_id": "s1"}) == {}
        answer = await v.answer("p")
        assert answer["result"]["outcome"] == "cancelled"
        assert await v.call("session/stop", {"session_id": "s1"}) == {}
        with anyio.fail_after(10):
            while session.state.value != "stopped":
                await anyio.sleep(0.01)
        # The fake agent can load its sessions: a stopped session comes back.
        recovered = await v.call("session/recover", {"session_id": "s1"})
        assert recovered["session_id"] == "s1"
        assert recovered["state"] == "ready", recovered["error"]
        with pytest.raises(RpcError) as err:
            await v.call("session/recover", {"session_id": "s1"})
        assert err.value.code == -32001 and err.value.message.startswith("refused")


async def test_detaching_never_stops_a_session(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with d.viewer() as v:
            await d.start(v, "echo", session_id="s1")
            await v.call("session/subscribe", {"session_id": "s1"})
        await anyio.sleep(0.1)
        assert d.supervisor.get("s1").state.value == "ready"
        async with d.viewer() as v:
            outcome = await v.call(
                "session/prompt", {"session_id": "s1", "prompt": text("hi"), "prompt_id": "p"}
            )
            assert outcome["outcome"] == "completed"


async def test_the_reservation_is_kept_with_the_session(tmp_path: Path) -> None:
    reservation = {"cpuMillis": 2000, "memoryMb": 4096, "source": "task", "sourceId": "t-1"}
    async with daemon(tmp_path) as d, d.viewer() as v:
        session = await d.start(v, "echo", session_id="s1", reservation=reservation)
        assert session["reservation"] == reservation
        [listed] = (await v.call("session/list"))["sessions"]
        assert listed["reservation"] == reservation
        record = await d.log.get_session("s1")
        assert record is not None and record.metadata["reservation"] == reservation


async def test_start_of_an_agent_that_needs_a_key_says_what_to_provide(tmp_path: Path) -> None:
    agent = fake("echo", "--auth-on", "session/new", name="needs-key")
    async with daemon(tmp_path, [agent]) as d, d.viewer() as v:
        session = await d.start(v, "needs-key", session_id="s1")
        assert session["state"] == "error"
        assert "needs authentication" not in session["error"]  # the agent's own words
        assert "Authentication required" in session["error"]
        assert [m["id"] for m in session["auth_methods"]] == ["fake-key"]
        await v.call("session/subscribe", {"session_id": "s1", "after_seq": 0})
        events = await v.events_until(d.log.head_seq("s1"))
        last = [e["data"] for e in events if e["type"] == "session.state"][-1]
        assert (last["state"], last["auth_methods"]) == ("error", session["auth_methods"])
        with pytest.raises(RpcError) as refused:
            await v.call(
                "session/prompt", {"session_id": "s1", "prompt": text("hi"), "prompt_id": "p1"}
            )
        assert refused.value.code == -32001
