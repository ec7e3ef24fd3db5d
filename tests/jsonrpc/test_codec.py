"""The JSON codec: orjson where it agrees with the standard library, the library elsewhere."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from vm_agent.jsonrpc import codec

ORDINARY = [
    b'{"jsonrpc":"2.0","method":"session/update","params":{"a":[1,2.5,-3e-7,true,null]}}',
    '{"text": "caf\u00e9 \u2028 \\n \\u00e9", "n": 9223372036854775807}',  # 19 digits
    b'  {"nested": {"deep": [[[{"k": "v"}]]]}}  ',
    b'{"x": 123456789012345678}',
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_json_parses_as_the_standard_library_does(text: bytes | str) -> None:
    assert codec.loads(text) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Lone surrogates (JavaScript agents can emit them): kept, not refused.
        (b'{"t":"a\\ud800b"}', {"t": "a\ud800b"}),
        # Past 64 bits: exact, not turned into a float.
        (b'{"n":123456789012345678901234567890}', {"n": 123456789012345678901234567890}),
        (b'{"n":-99999999999999999999}', {"n": -99999999999999999999}),
        # Not JSON, but accepted before orjson: still accepted.
        (b'{"x":NaN}', {"x": math.nan}),
    ],
)
def test_where_orjson_differs_the_standard_library_decides(text: bytes, expected: Any) -> None:
    got = codec.loads(text)
    if isinstance(expected.get("x"), float):
        assert math.isnan(got["x"])
    else:
        assert got == expected


@pytest.mark.parametrize(
    "text",
    [b"{", b"", b"\xff\xfe{}", b"[" * 100_000, b'{"a":', b"nope"],
)
def test_not_json_is_a_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        codec.loads(text)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [1.5, None, True, "é\u2028"]},
        {"big": 2**80, "neg": -(2**70)},
        {"s": "lone \ud800 surrogate"},
        [],
        "text",
    ],
)
def test_dumps_is_valid_utf8_json_that_reads_back(value: Any) -> None:
    out = codec.dumps(value)
    text = out.decode("utf-8")  # always valid UTF-8
    assert json.loads(text) == value
    assert " " not in text.replace("lone \\ud800 surrogate", "")  # compact


def test_dumps_keeps_key_order_and_refuses_what_is_not_json() -> None:
    assert codec.dumps({"z": 1, "a": 2}) == b'{"z":1,"a":2}'
    with pytest.raises(TypeError):
        codec.dumps({"x": {1, 2}})
