"""The current screen of a terminal, from a VT emulator (``pyte``) fed its output in order.

pyte is pure Python (a few hundred KiB/s), so the event loop never runs it: output is
queued with its seq (cheap), and the emulator catches up in a worker thread when someone
asks for the screen or resizes it. When more than ``max_pending`` characters queued up
since (a flood nobody watched), only the last ``max_pending`` of them (from a line start)
are fed: the screen then shows what those draw, and a mode a skipped part set may be lost.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pyte

MAX_PENDING = 64 * 1024


class Screen:
    def __init__(self, cols: int, rows: int, *, max_pending: int = MAX_PENDING) -> None:
        self._screen = pyte.Screen(cols, rows)
        self._stream = pyte.Stream(self._screen)
        self._lock = threading.Lock()
        self._pending: deque[str] = deque()
        self._pending_chars = 0
        self._max_pending = max_pending
        self.seq = 0  # the last output the screen holds once caught up
        self._queued_seq = 0
        self.skipped = 0  # characters never fed (floods)

    def feed(self, text: str, seq: int) -> None:
        """Queues output (on the event loop: no emulation here)."""
        with self._lock:
            self._pending.append(text)
            self._pending_chars += len(text)
            self._queued_seq = seq
            while self._pending_chars - len(self._pending[0]) > 2 * self._max_pending:
                self._pending_chars -= len(dropped := self._pending.popleft())
                self.skipped += len(dropped)

    def mark(self, seq: int) -> None:
        """An event that changes nothing on the screen (e.g. the terminal opening)."""
        with self._lock:
            self._queued_seq = seq

    def _catch_up(self) -> None:
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        if len(text) > self._max_pending:
            cut = len(text) - self._max_pending
            line = text.find("\n", cut)
            cut = line + 1 if 0 <= line < len(text) - 1 else cut
            self.skipped += cut
            text = text[cut:]
        self._stream.feed(text)
        self.seq = self._queued_seq

    def resize(self, cols: int, rows: int) -> None:
        """In a worker thread: what came before is drawn at the old size."""
        with self._lock:
            self._catch_up()
            self._screen.resize(rows, cols)

    def snapshot(self) -> dict[str, Any]:
        """In a worker thread: the screen's text, its cursor, an ANSI string that paints it
        on a blank terminal, and the seq of the last output it holds."""
        with self._lock:
            self._catch_up()
            lines = [line.rstrip() for line in self._screen.display]
            x, y = self._screen.cursor.x, self._screen.cursor.y
            cols, rows, seq = self._screen.columns, self._screen.lines, self.seq
        paint = "\x1b[H\x1b[2J" + "\r\n".join(lines) + f"\x1b[{y + 1};{x + 1}H"
        return {
            "seq": seq,
            "cols": cols,
            "rows": rows,
            "lines": lines,
            "cursor": {"x": x, "y": y},
            "ansi": paint,
        }
