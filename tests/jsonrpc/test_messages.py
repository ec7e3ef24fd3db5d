from __future__ import annotations

import json

import pytest

from vm_agent.jsonrpc import messages as m
from vm_agent.jsonrpc.errors import INVALID_REQUEST, PARSE_ERROR, JsonRpcError


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"jsonrpc":"2.0","id":1,"method":"a","params":{}}', m.Request(1, "a", {})),
        ('{"jsonrpc":"2.0","id":"x","method":"a"}', m.Request("x", "a", None)),
        ('{"jsonrpc":"2.0","method":"n","params":[1]}', m.Notification("n", [1])),
        ('{"jsonrpc":"2.0","id":3,"result":null}', m.Response(3, None)),
        ('{"jsonrpc":"2.0","id":3,"result":{"a":1}}', m.Response(3, {"a": 1})),
    ],
)
def test_parse_valid(frame: str, expected: m.Message) -> None:
    assert m.parse(frame) == expected


def test_parse_error_response() -> None:
    msg = m.parse('{"jsonrpc":"2.0","id":4,"error":{"code":-32000,"message":"auth"}}')
    assert isinstance(msg, m.ErrorResponse)
    assert msg.id == 4
    assert (msg.error.code, msg.error.message) == (-32000, "auth")


@pytest.mark.parametrize(
    ("frame", "code", "msg_id"),
    [
        ("not json", PARSE_ERROR, None),
        ('{"jsonrpc":"2.0","id":1,"method":', PARSE_ERROR, None),
        ("[1,2]", INVALID_REQUEST, None),
        ('"a string"', INVALID_REQUEST, None),
        ('{"id":1,"method":"a"}', INVALID_REQUEST, 1),
        ('{"jsonrpc":"2.0","id":1,"method":5}', INVALID_REQUEST, 1),
        ('{"jsonrpc":"2.0","id":1,"method":"a","params":3}', INVALID_REQUEST, 1),
        ('{"jsonrpc":"2.0","id":true,"method":"a"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":1}', INVALID_REQUEST, 1),
        (b"\xff\xfe", PARSE_ERROR, None),
    ],
)
def test_parse_invalid(frame: str | bytes, code: int, msg_id: object) -> None:
    msg = m.parse(frame)
    assert isinstance(msg, m.Invalid)
    assert msg.error.code == code
    assert msg.id == msg_id


def test_encode_roundtrip() -> None:
    assert m.parse(m.encode_request(7, "x", {"é": 1})) == m.Request(7, "x", {"é": 1})
    assert m.parse(m.encode_notification("n", None)) == m.Notification("n", None)
    assert m.parse(m.encode_result(7, [1])) == m.Response(7, [1])
    err = json.loads(m.encode_error(None, JsonRpcError(-32601, "nope", {"d": 1})))
    assert err == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32601, "message": "nope", "data": {"d": 1}},
    }
    assert b"\n" not in m.encode_result(1, "multi\nline")
