"""Sessions belong to their owner: two users on one node, and the control plane's node scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.server.harness import Client, Daemon, RpcError, daemon, settled_head, text

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRET = "alice's private prompt text"


def _methods_on(session_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("session/subscribe", {"session_id": session_id}),
        ("session/prompt", {"session_id": session_id, "prompt": text("x"), "prompt_id": "b1"}),
        ("session/cancel", {"session_id": session_id}),
        ("session/stop", {"session_id": session_id}),
        ("session/recover", {"session_id": session_id}),
        ("permission/respond", {"session_id": session_id, "request_id": "r", "cancelled": True}),
    ]


async def _ids(client: Client) -> list[str]:
    listed = await client.call("session/list")
    return sorted(s["session_id"] for s in listed["sessions"])


async def _forbidden(client: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as err:
        await client.call(method, params)
    assert err.value.code == -32003, (method, err.value)
    return err.value


def _user(d: Daemon, name: str, *scopes: str) -> str:
    return d.token(*(scopes or ("read", "write")), subject=name)


async def test_another_user_neither_sees_nor_drives_a_session(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with d.viewer(_user(d, "alice")) as alice, d.viewer(_user(d, "bob")) as bob:
            described = await d.start(alice, "echo", session_id="s-alice")
            assert described["owner"] == "alice"
            await alice.call("session/subscribe", {"session_id": "s-alice"})
            await alice.call(
                "session/prompt",
                {"session_id": "s-alice", "prompt": text(SECRET), "prompt_id": "a1"},
            )
            await d.start(bob, "echo", session_id="s-bob")
            assert await _ids(alice) == ["s-alice"]
            assert await _ids(bob) == ["s-bob"]
            for method, params in _methods_on("s-alice"):
                err = await _forbidden(bob, method, params)
                assert "belongs to another user" in err.message
            # A read token of bob's is refused the same way for reading.
            async with d.viewer(_user(d, "bob", "read")) as bob_reads:
                assert await _ids(bob_reads) == ["s-bob"]
                await _forbidden(bob_reads, "session/subscribe", {"session_id": "s-alice"})
            # Bob cannot start a session in alice's name.
            err = await _forbidden(
                bob, "session/start", {"agent": "echo", "cwd": str(d.workdir), "owner": "alice"}
            )
            assert "node" in err.message
            assert bob.events == []  # not one event of alice's reached bob
        # Nothing bob asked for happened to alice's session.
        assert d.supervisor.get("s-alice").state.value == "ready"
        started = [e for e in await d.log.read("s-alice", 0, 1000) if e.type == "prompt.started"]
        assert [e.data["prompt_id"] for e in started] == ["a1"]


async def test_the_node_scope_reaches_every_session_and_names_owners(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        node_token = d.token("node", subject="control-plane")
        async with (
            d.viewer(_user(d, "alice")) as alice,
            d.viewer(_user(d, "bob")) as bob,
            d.viewer(node_token) as node,
        ):
            await d.start(alice, "echo", session_id="s-alice")
            # The control plane starts one for bob, and one of its own.
            for_bob = await d.start(node, "echo", session_id="s-bob", owner="bob")
            assert for_bob["owner"] == "bob"
            own = await d.start(node, "echo", session_id="s-node")
            assert own["owner"] is None
            assert await _ids(node) == ["s-alice", "s-bob", "s-node"]
            assert await _ids(bob) == ["s-bob"]
            assert await _ids(alice) == ["s-alice"]
            await _forbidden(alice, "session/subscribe", {"session_id": "s-node"})
            # Bob drives the session started for him; the node drives alice's.
            outcome = await bob.call(
                "session/prompt", {"session_id": "s-bob", "prompt": text("hi"), "prompt_id": "p"}
            )
            assert outcome["outcome"] == "completed"
            await node.call("session/subscribe", {"session_id": "s-alice"})
            outcome = await node.call(
                "session/prompt",
                {"session_id": "s-alice", "prompt": text("from cp"), "prompt_id": "n1"},
            )
            assert outcome["outcome"] == "completed"
            head = await settled_head(d, "s-alice")
            with anyio.fail_after(20):
                await node.events_until(head)
            assert {e["session_id"] for e in node.events} == {"s-alice"}


async def test_owners_survive_a_restart(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d, d.viewer(_user(d, "alice")) as alice:
        await d.start(alice, "echo", session_id="s-alice")
    async with daemon(tmp_path) as d:
        restored = await d.supervisor.restore()
        assert [(s.id, s.owner) for s in restored] == [("s-alice", "alice")]
        async with d.viewer(_user(d, "alice")) as alice, d.viewer(_user(d, "bob")) as bob:
            [listed] = (await alice.call("session/list"))["sessions"]
            assert (listed["session_id"], listed["owner"]) == ("s-alice", "alice")
            assert await _ids(bob) == []
            await _forbidden(bob, "session/recover", {"session_id": "s-alice"})
