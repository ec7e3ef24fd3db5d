"""The viewer API of a draining node: a session running when the drain came keeps taking
prompts to their end; `session/start` (and bringing back a session at rest) answers a
refused error that says the node is draining, and nothing is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.harness import RpcError, daemon, text

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
REFUSED = -32001


async def test_a_draining_node_refuses_new_sessions_and_finishes_running_ones(
    tmp_path: Path,
) -> None:
    async with daemon(tmp_path) as d, d.viewer() as v:
        await d.start(v, "echo", session_id="s-running")
        await d.start(v, "echo", session_id="s-rested")
        await v.call("session/stop", {"session_id": "s-rested"})
        d.supervisor.draining = True  # what the heartbeat's answer `drain: true` does
        with pytest.raises(RpcError) as err:
            await d.start(v, "echo", session_id="s-new")
        assert err.value.code == REFUSED
        assert "draining" in err.value.message
        with pytest.raises(RpcError) as err:
            await v.call("session/recover", {"session_id": "s-rested"})
        assert err.value.code == REFUSED and "draining" in err.value.message
        listed = await v.call("session/list")
        assert sorted(s["session_id"] for s in listed["sessions"]) == ["s-rested", "s-running"]
        prompt = {"session_id": "s-running", "prompt": text("still served"), "prompt_id": "p"}
        assert (await v.call("session/prompt", prompt))["outcome"] == "completed"


async def test_once_drained_is_said_no_new_prompt_starts(tmp_path: Path) -> None:
    # the control plane may delete the node any moment after `drained: true`
    async with daemon(tmp_path) as d, d.viewer() as v:
        await d.start(v, "echo", session_id="s1")
        first = {"session_id": "s1", "prompt": text("before"), "prompt_id": "p1"}
        done = await v.call("session/prompt", first)
        d.supervisor.draining = d.supervisor.drained = True  # what the control link sets
        with pytest.raises(RpcError) as err:
            await v.call("session/prompt", {**first, "prompt_id": "p2"})
        assert err.value.code == REFUSED and "drained" in err.value.message
        assert await v.call("session/prompt", first) == done  # a finished one still answers
