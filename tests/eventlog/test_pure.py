"""The pure parts: payload encoding and the retention plan."""

from __future__ import annotations

import json
import math

import pytest

from vm_agent.eventlog.encode import encode_payload
from vm_agent.eventlog.retention import Trim, plan_trim


def test_payload_is_the_notification_params_with_data_key_order_kept() -> None:
    data = {"z": 1, "a": {"y": [1, 2], "b": None}, "sessionUpdate": "future_variant"}
    text, size = encode_payload(7, "s-1", 1700000000.25, "acp.update", data)
    assert text == (
        '{"seq":7,"session_id":"s-1","ts":1700000000.25,"type":"acp.update",'
        '"data":{"z":1,"a":{"y":[1,2],"b":null},"sessionUpdate":"future_variant"}}'
    )
    assert size == len(text.encode())
    assert list(json.loads(text)["data"]) == ["z", "a", "sessionUpdate"]


def test_non_ascii_is_kept_and_size_counts_utf8_bytes() -> None:
    text, size = encode_payload(1, "s", 1.0, "acp.update", {"t": "héllo ✓"})
    assert "héllo ✓" in text
    assert size == len(text.encode("utf-8")) > len(text)


def test_lone_surrogate_falls_back_to_ascii_escapes() -> None:
    text, size = encode_payload(1, "s", 1.0, "acp.update", {"t": "bad \ud800 end"})
    text.encode("utf-8")  # storable
    assert json.loads(text)["data"]["t"] == "bad \ud800 end"
    assert size == len(text)


@pytest.mark.parametrize(
    ("data", "ts"),
    [({"x": {1, 2}}, 1.0), ({"x": object()}, 1.0), ({"x": 1}, math.inf), ({}, math.nan)],
)
def test_non_json_is_refused(data: dict[str, object], ts: float) -> None:
    with pytest.raises((ValueError, TypeError)):
        encode_payload(1, "s", ts, "t", data)


def test_a_non_finite_float_in_data_is_stored_as_null() -> None:
    text, _ = encode_payload(1, "s", 1.0, "t", {"x": math.nan, "y": [math.inf]})
    assert json.loads(text)["data"] == {"x": None, "y": [None]}


def test_payload_matches_the_standard_library_for_ordinary_data() -> None:
    data = {"z": 1, "a": [1.5e-07, 0.1, 10**18], "u": 'é\u2028\n"', "n": None, "b": True}
    text, size = encode_payload(7, "sé", 1732431234.123456, "acp.update", data)
    expected = {"seq": 7, "session_id": "sé", "ts": 1732431234.123456, "type": "acp.update"}
    assert json.loads(text) == {**expected, "data": data}
    assert list(json.loads(text)["data"]) == ["z", "a", "u", "n", "b"]  # order kept
    assert size == len(text.encode())


def _rows(sizes: list[int], first_rowid: int = 1) -> list[tuple[int, int, int]]:
    return [(first_rowid + i, i + 1, size) for i, size in enumerate(sizes)]


@pytest.mark.parametrize(
    ("sizes", "limit", "floor", "expected"),
    [
        ([10, 10, 10], 30, None, None),  # fits exactly
        ([10, 10, 10], 25, None, Trim(1, 1, 10)),
        ([10, 10, 10], 10, None, Trim(2, 2, 20)),
        ([10, 10, 10], 1, None, Trim(2, 2, 20)),  # newest kept even over budget
        ([100], 1, None, None),  # a single oversize event stays
        ([10, 10, 10], 10, 1, Trim(1, 1, 10)),  # rowid 2 undelivered: kept
        ([10, 10, 10], 10, 0, None),  # nothing delivered: nothing dropped
        ([5, 5, 30], 30, None, Trim(2, 2, 10)),
    ],
)
def test_plan_trim(sizes: list[int], limit: int, floor: int | None, expected: Trim | None) -> None:
    assert plan_trim(_rows(sizes), sum(sizes), limit, len(sizes), floor) == expected


def test_plan_trim_reads_lazily() -> None:
    consumed: list[int] = []

    def rows() -> object:
        for row in _rows([10] * 1000):
            consumed.append(row[1])
            yield row

    trim = plan_trim(rows(), 10_000, 9_980, 1000, None)  # type: ignore[arg-type]
    assert trim == Trim(2, 2, 20)
    assert len(consumed) <= 3
