"""Pure pieces of the viewer server: header parsing, params, the shared event frame."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest

from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.server import params as p
from vm_agent.server.fanout import event_frame
from vm_agent.server.server import batch_requested
from vm_agent.server.transport import take_batch
from vm_agent.server.viewer import bearer_token


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer  abc ", "abc"),
        ("Basic abc", ""),
        ("Bearer", ""),
        ("Bearer   ", ""),
        ("", ""),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("model", "params", "fragment"),
    [
        (p.PromptParams, {"session_id": "s", "prompt": [], "prompt_id": "x"}, "prompt"),
        (p.PromptParams, {"session_id": "s", "prompt": [{"type": 1}], "prompt_id": "x"}, "type"),
        (p.PromptParams, {"session_id": "s", "prompt": [{"type": "text"}]}, "prompt_id"),
        (p.PromptParams, {"session_id": "s", "prompt": [{"type": "text"}], "prompt_id": ""}, "id"),
        (p.SubscribeParams, {"session_id": "s", "after_seq": -1}, "after_seq"),
        (p.SubscribeParams, {"session_id": "s", "after": 3}, "after"),
        (p.PermissionParams, {"session_id": "s", "request_id": "r"}, "exactly one"),
        (
            p.PermissionParams,
            {"session_id": "s", "request_id": "r", "option_id": "o", "cancelled": True},
            "exactly one",
        ),
        (p.ListParams, {"x": 1}, "x"),
        (p.StartParams, {"agent": "a"}, "cwd"),
    ],
)
def test_bad_params_name_the_problem(model: Any, params: Any, fragment: str) -> None:
    with pytest.raises(JsonRpcError) as err:
        p.parse(model, "m", params)
    assert err.value.code == -32602
    assert err.value.message.startswith("m: ")
    assert fragment in err.value.message


def test_good_params() -> None:
    assert p.parse(p.ListParams, "session/list", None) == p.ListParams()
    sub = p.parse(p.SubscribeParams, "s", {"session_id": "s"})
    assert sub.after_seq == 0
    answer = p.parse(
        p.PermissionParams, "r", {"session_id": "s", "request_id": "r", "cancelled": True}
    )
    assert answer.cancelled and answer.option_id is None
    with pytest.raises(JsonRpcError):
        p.parse(p.ListParams, "session/list", [1])


def test_event_frame_wraps_the_stored_payload_unchanged() -> None:
    payload = '{"seq":1,"session_id":"s","ts":1.5,"type":"acp.update","data":{"ü":"\\u00fc"}}'
    frame = event_frame(payload)
    message = json.loads(frame)
    assert message == {"jsonrpc": "2.0", "method": "session/event", "params": json.loads(payload)}
    assert payload.encode() in frame


@pytest.mark.parametrize(
    ("queued", "max_bytes", "frame", "count", "left"),
    [
        ([b"{1}"], 100, b"{1}", 1, 0),  # alone: sent as itself, no latency added
        ([b"{1}", b"{2}"], 100, b"[{1},{2}]", 2, 0),
        ([b"{1}", b"{2}", b"{3}"], 11, b"[{1},{2}]", 2, 1),  # the byte bound holds
        ([b"{1}", b"{2}", b"{3}"], 13, b"[{1},{2},{3}]", 3, 0),  # exactly at the bound
        ([b"x" * 50, b"{2}"], 20, b"x" * 50, 1, 1),  # too large to share a frame
        ([b"{1}", b"y" * 50], 20, b"{1}", 1, 1),  # the next one does not fit
    ],
)
def test_take_batch(
    queued: list[bytes], max_bytes: int, frame: bytes, count: int, left: int
) -> None:
    queue = deque(queued)
    assert take_batch(queue, max_bytes) == (frame, count)
    assert len(queue) == left


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/ws", False),
        ("/v1/ws?batch=1", True),
        ("/v1/ws?batch=true", True),
        ("/v1/ws?batch=TRUE", True),
        ("/v1/ws?batch=0", False),
        ("/v1/ws?batch=false", False),
        ("/v1/ws?other=x", False),
        ("/v1/ws?batch=yes", ValueError),
        ("/v1/ws?batch=", ValueError),
        ("/v1/ws?batch=1&batch=0", ValueError),
    ],
)
def test_batch_requested(path: str, expected: bool | type[Exception]) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError, match="batch must be"):
            batch_requested(path)
    else:
        assert batch_requested(path) is expected
