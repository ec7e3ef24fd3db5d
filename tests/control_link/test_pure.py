"""Pure pieces: the outbox filter, node usage parsing, Retry-After, backoff bounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from vm_agent.control_link import DEFAULT_TYPES, is_forwarded, node_usage
from vm_agent.control_link.client import _retry_after
from vm_agent.control_link.outbox import backoff_delay
from vm_agent.control_link.usage import parse_loadavg, parse_meminfo
from vm_agent.eventlog import EVENT_TYPES, Event


def _event(type_: str, data: Any) -> Event:
    payload = json.dumps({"seq": 1, "session_id": "s", "ts": 1.0, "type": type_, "data": data})
    return Event(1, "s", 1, 1.0, type_, payload)


def _update(kind: str) -> dict[str, Any]:
    return {"sessionId": "a", "update": {"sessionUpdate": kind, "content": {"text": "x"}}}


@pytest.mark.parametrize(
    ("event", "forwarded"),
    [
        (_event("acp.update", _update("agent_message_chunk")), True),
        (_event("acp.update", _update("tool_call")), False),
        (_event("acp.update", _update("agent_thought_chunk")), False),
        (_event("acp.update", _update("plan")), False),
        (_event("acp.update", {"garbage": True}), False),
        (_event("acp.update", None), False),
        (_event("session.state", {"state": "ready"}), True),
        (_event("prompt.finished", {"outcome": "completed"}), True),
    ],
)
def test_only_chat_updates_pass_among_acp_updates(event: Event, forwarded: bool) -> None:
    assert is_forwarded(event) is forwarded


def test_every_default_type_is_a_known_event_type_and_acp_updates_can_all_pass() -> None:
    assert DEFAULT_TYPES <= EVENT_TYPES
    assert is_forwarded(_event("acp.update", _update("tool_call")), None)


def test_usage_parsers() -> None:
    assert parse_loadavg("0.50 1.25 2.00 1/123 4567\n") == {
        "load_1m": 0.5,
        "load_5m": 1.25,
        "load_15m": 2.0,
    }
    meminfo = "MemTotal:       2048 kB\nMemFree:  10 kB\nMemAvailable:   1024 kB\n"
    assert parse_meminfo(meminfo) == {
        "mem_total_bytes": 2048 * 1024,
        "mem_available_bytes": 1024 * 1024,
    }
    assert parse_meminfo("nothing here") == {}


def test_node_usage_reads_this_machine(tmp_path: Path) -> None:
    usage = node_usage(tmp_path / "not-yet-created")
    for key in ("cpus", "load_1m", "mem_total_bytes", "disk_total_bytes", "disk_free_bytes"):
        assert key in usage, key
    assert usage["disk_path"] == str(tmp_path / "not-yet-created")
    assert 0 < usage["disk_free_bytes"] <= usage["disk_total_bytes"]
    json.dumps(usage)  # goes into a JSON body as is


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("7", 7.0), ("0", 0.0), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    headers = {} if header is None else {"Retry-After": header}
    assert _retry_after(httpx.Response(429, headers=headers)) == expected


def test_backoff_grows_is_bounded_and_never_near_zero() -> None:
    for failures in range(1, 30):
        delay = backoff_delay(failures, 1.0, 30.0)
        step = min(30.0, 2.0 ** (failures - 1))
        assert step / 2 <= delay <= step
