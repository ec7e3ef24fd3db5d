"""session/request_permission policies."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from vm_agent.acp.permissions import (
    AllowPolicy,
    AskPolicy,
    PendingPermission,
    PermissionPolicy,
    RejectPolicy,
)
from vm_agent.jsonrpc.errors import INVALID_PARAMS, RESOURCE_NOT_FOUND, JsonRpcError

pytestmark = pytest.mark.anyio

ALL_KINDS = ["reject_always", "allow_always", "reject_once", "allow_once"]
CANCELLED = {"outcome": {"outcome": "cancelled"}}


def _request(kinds: list[str]) -> dict[str, Any]:
    return {
        "sessionId": "s1",
        "toolCall": {"toolCallId": "call-1", "title": "Edit file"},
        "options": [{"optionId": f"opt-{kind}", "name": kind, "kind": kind} for kind in kinds],
    }


def _selected(option_id: str) -> dict[str, Any]:
    return {"outcome": {"outcome": "selected", "optionId": option_id}}


async def test_allow_prefers_once() -> None:
    policy: PermissionPolicy = AllowPolicy()
    assert await policy.decide("1", _request(ALL_KINDS)) == _selected("opt-allow_once")
    assert await policy.decide("2", _request(["allow_always", "reject_once"])) == _selected(
        "opt-allow_always"
    )
    assert await policy.decide("3", _request(["reject_once"])) == CANCELLED


async def test_reject_prefers_once() -> None:
    policy: PermissionPolicy = RejectPolicy()
    assert await policy.decide("1", _request(ALL_KINDS)) == _selected("opt-reject_once")
    assert await policy.decide("2", _request(["reject_always"])) == _selected("opt-reject_always")
    assert await policy.decide("3", _request(["allow_once"])) == CANCELLED


async def test_invalid_params() -> None:
    bad = _request(["allow_once"])
    bad["options"][0]["kind"] = "maybe"
    with pytest.raises(JsonRpcError) as err:
        await AllowPolicy().decide("1", bad)
    assert err.value.code == INVALID_PARAMS
    assert "options" in err.value.message


class _Asked:
    """An AskPolicy and a way to wait (without polling) until n requests are pending."""

    def __init__(self) -> None:
        self.seen: list[PendingPermission] = []
        self._arrived = anyio.Event()
        self.policy = AskPolicy(on_pending=self._on_pending)

    def _on_pending(self, entry: PendingPermission) -> None:
        self.seen.append(entry)
        self._arrived.set()

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(10):
            while len(self.seen) < count:
                await self._arrived.wait()
                self._arrived = anyio.Event()


async def test_ask_waits_for_respond() -> None:
    asked = _Asked()
    results: dict[str, dict[str, Any]] = {}

    async def decide(request_id: str) -> None:
        results[request_id] = await asked.policy.decide(request_id, _request(ALL_KINDS))

    async with anyio.create_task_group() as tg:
        tg.start_soon(decide, "7")
        await asked.wait_for(1)
        [entry] = asked.policy.pending()
        assert entry.request_id == "7"
        assert entry.params["toolCall"]["toolCallId"] == "call-1"
        assert results == {}
        asked.policy.respond("7", "opt-allow_always")
    assert results == {"7": _selected("opt-allow_always")}
    assert asked.policy.pending() == []


async def test_ask_cancel_all_and_respond_cancelled() -> None:
    asked = _Asked()
    results: dict[str, dict[str, Any]] = {}

    async def decide(request_id: str) -> None:
        results[request_id] = await asked.policy.decide(request_id, _request(ALL_KINDS))

    async with anyio.create_task_group() as tg:
        for rid in ("a", "b", "c"):
            tg.start_soon(decide, rid)
        await asked.wait_for(3)
        asked.policy.respond("a", None, cancelled=True)
        assert asked.policy.cancel_all() == 2
    assert results == {"a": CANCELLED, "b": CANCELLED, "c": CANCELLED}
    assert asked.policy.pending() == []


async def test_ask_rejects_bad_answers() -> None:
    asked = _Asked()
    results: list[dict[str, Any]] = []

    async def decide() -> None:
        results.append(await asked.policy.decide("r1", _request(["allow_once"])))

    async with anyio.create_task_group() as tg:
        tg.start_soon(decide)
        await asked.wait_for(1)
        with pytest.raises(JsonRpcError) as err:
            asked.policy.respond("r1", "opt-reject_once")
        assert err.value.code == INVALID_PARAMS
        assert "opt-reject_once" in err.value.message and "opt-allow_once" in err.value.message
        with pytest.raises(JsonRpcError) as err:
            asked.policy.respond("r1", None)
        assert err.value.code == INVALID_PARAMS
        with pytest.raises(JsonRpcError) as err:
            asked.policy.respond("other", "opt-allow_once")
        assert err.value.code == RESOURCE_NOT_FOUND
        assert asked.policy.pending()  # still waiting after the bad answers
        asked.policy.respond("r1", "opt-allow_once")
    assert results == [_selected("opt-allow_once")]


async def test_ask_forgets_a_request_whose_caller_gave_up() -> None:
    asked = _Asked()
    async with anyio.create_task_group() as tg:
        tg.start_soon(asked.policy.decide, "gone", _request(ALL_KINDS))
        await asked.wait_for(1)
        assert len(asked.policy.pending()) == 1
        tg.cancel_scope.cancel()
    assert asked.policy.pending() == []
    with pytest.raises(JsonRpcError):
        asked.policy.respond("gone", "opt-allow_once")
