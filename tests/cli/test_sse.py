"""The Server-Sent Events decoder `vm-agent task` reads a task's stream with."""

from __future__ import annotations

import pytest

from vm_agent.cli.sse import ServerEvent, SseDecoder


def decode(text: str, decoder: SseDecoder | None = None) -> list[ServerEvent]:
    d = decoder or SseDecoder()
    return [e for line in text.split("\n") if (e := d.feed(line)) is not None]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ("data: x\n\n", [ServerEvent("message", "x")]),
        ("id: 3\nevent: acp.update\ndata: {}\n\n", [ServerEvent("acp.update", "{}", "3")]),
        ("data: a\ndata: b\n\n", [ServerEvent("message", "a\nb")]),
        ("data:no-space\n\n", [ServerEvent("message", "no-space")]),
        (": keep-alive\n\n", []),  # a comment, then an empty event: nothing
        ("event: status\n\n", []),  # no data: not dispatched
        (
            "id: 1\ndata: a\n\ndata: b\n\n",
            [ServerEvent("message", "a", "1"), ServerEvent("message", "b", "1")],
        ),
        ("data: a", []),  # not ended yet
        ("id: a\0b\ndata: x\n\n", [ServerEvent("message", "x")]),  # NUL in an id: ignored
    ],
)
def test_decoder(stream: str, expected: list[ServerEvent]) -> None:
    assert decode(stream) == expected


def test_the_last_event_id_carries_over_and_retry_is_kept() -> None:
    d = SseDecoder(last_event_id="7")
    assert decode("retry: 1500\nevent: status\ndata: {}\n\n", d) == [
        ServerEvent("status", "{}", "7")
    ]
    assert d.retry_ms == 1500
    decode("id: 9\ndata: x\n\n", d)
    assert d.last_event_id == "9"
