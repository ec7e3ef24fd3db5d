"""Newline framing as a pure state machine: bytes in, complete lines (or oversize notices) out.

No I/O here, so the size bound and the partial-line handling are tested with plain tables.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Oversize:
    """A line that passed the bound; its bytes were discarded up to its newline (or EOF)."""

    size: int
    limit: int


Frame = bytes | Oversize


class LineSplitter:
    """Splits a byte stream on ``\\n`` while bounding each line.

    A line over ``max_line_bytes`` is not buffered: the splitter switches to discarding until
    the next newline and then reports one ``Oversize``, so a peer cannot make us hold more
    than the bound, and the lines after it still come through.
    """

    __slots__ = ("_buf", "_discarded", "_discarding", "_scan_from", "max_line_bytes")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()
        self._scan_from = 0  # bytes before this offset hold no newline: never rescan them
        self._discarding = False
        self._discarded = 0

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        if self._discarding:
            nl = data.find(b"\n")
            if nl < 0:
                self._discarded += len(data)
                return out
            out.append(Oversize(self._discarded + nl, self.max_line_bytes))
            self._discarding = False
            self._discarded = 0
            data = data[nl + 1 :]
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", max(start, self._scan_from))
            if nl < 0:
                break
            line_len = nl - start
            if line_len > self.max_line_bytes:
                out.append(Oversize(line_len, self.max_line_bytes))
            else:
                line = bytes(buf[start:nl])
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line.strip():
                    out.append(line)
            start = nl + 1
            self._scan_from = 0
        if start:
            del buf[:start]
        self._scan_from = len(buf)
        if len(buf) > self.max_line_bytes:
            self._discarding = True
            self._discarded = len(buf)
            buf.clear()
            self._scan_from = 0
        return out

    def end(self) -> list[Frame]:
        """The stream ended: a last line without a newline still counts."""
        out: list[Frame] = []
        if self._discarding:
            out.append(Oversize(self._discarded, self.max_line_bytes))
        elif self._buf.strip():
            out.append(bytes(self._buf))
        self._buf.clear()
        self._scan_from = 0
        self._discarding = False
        self._discarded = 0
        return out
