"""A bounded tail of an agent's stderr: always drained, only the last bytes kept."""

from __future__ import annotations

from collections import deque

DEFAULT_TAIL_BYTES = 64 * 1024


class StderrTail:
    __slots__ = ("_chunks", "_kept", "limit", "total_bytes")

    def __init__(self, limit: int = DEFAULT_TAIL_BYTES) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._kept = 0
        self.total_bytes = 0

    def write(self, data: bytes) -> None:
        self.total_bytes += len(data)
        if len(data) >= self.limit:
            self._chunks.clear()
            self._chunks.append(data[-self.limit :])
            self._kept = self.limit
            return
        self._chunks.append(data)
        self._kept += len(data)
        while self._kept > self.limit:
            over = self._kept - self.limit
            first = self._chunks[0]
            if len(first) <= over:
                self._chunks.popleft()
                self._kept -= len(first)
            else:
                self._chunks[0] = first[over:]
                self._kept -= over

    @property
    def cut(self) -> bool:
        """Whether earlier output was dropped to keep the bound."""
        return self.total_bytes > self._kept

    def text(self) -> str:
        data = b"".join(self._chunks)
        if self.cut:
            # start on a whole line where one is near, so the tail reads cleanly
            nl = data.find(b"\n", 0, 4096)
            if nl >= 0:
                data = data[nl + 1 :]
        return data.decode("utf-8", errors="replace")
