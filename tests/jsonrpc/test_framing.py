from __future__ import annotations

import pytest

from vm_agent.jsonrpc.framing import LineSplitter, Oversize


@pytest.mark.parametrize(
    ("limit", "chunks", "expected"),
    [
        (100, [b'{"a":1}\n'], [b'{"a":1}']),
        (100, [b'{"a"', b":1}\n"], [b'{"a":1}']),
        (100, [b"one\ntwo\n", b"three\n"], [b"one", b"two", b"three"]),
        (100, [b"crlf\r\n"], [b"crlf"]),
        (100, [b"\n\n  \nx\n"], [b"x"]),  # blank lines are not frames
        (4, [b"12345\nok\n"], [Oversize(5, 4), b"ok"]),
        (4, [b"1234\n"], [b"1234"]),  # exactly at the bound is fine
        (4, [b"12", b"345", b"678\nok\n"], [Oversize(8, 4), b"ok"]),
        (4, [b"123456789", b"abc", b"\nok\n"], [Oversize(12, 4), b"ok"]),
        (100, [b"a\nb"], [b"a"]),  # partial line waits for its newline
    ],
)
def test_feed(limit: int, chunks: list[bytes], expected: list[object]) -> None:
    splitter = LineSplitter(limit)
    out: list[object] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    assert out == expected


@pytest.mark.parametrize(
    ("limit", "chunks", "expected_end"),
    [
        (100, [b"tail-without-newline"], [b"tail-without-newline"]),
        (100, [b"done\n"], []),
        (4, [b"123456"], [Oversize(6, 4)]),
    ],
)
def test_end(limit: int, chunks: list[bytes], expected_end: list[object]) -> None:
    splitter = LineSplitter(limit)
    for chunk in chunks:
        splitter.feed(chunk)
    assert splitter.end() == expected_end


def test_large_line_in_small_chunks_is_reassembled() -> None:
    line = b"x" * (3 * 1024 * 1024)
    splitter = LineSplitter(16 * 1024 * 1024)
    out: list[object] = []
    for i in range(0, len(line), 65536):
        out.extend(splitter.feed(line[i : i + 65536]))
    out.extend(splitter.feed(b"\n"))
    assert out == [line]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LineSplitter(0)
