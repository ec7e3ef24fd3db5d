"""The current screen of a terminal, from a VT emulator fed every output event in order."""

from __future__ import annotations

from typing import Any

import pyte


class Screen:
    def __init__(self, cols: int, rows: int) -> None:
        self._screen = pyte.Screen(cols, rows)
        self._stream = pyte.Stream(self._screen)

    def feed(self, text: str) -> None:
        self._stream.feed(text)

    def resize(self, cols: int, rows: int) -> None:
        self._screen.resize(rows, cols)

    def snapshot(self) -> dict[str, Any]:
        """The screen's text, its cursor, and an ANSI string that paints it on a blank terminal."""
        lines = [line.rstrip() for line in self._screen.display]
        x, y = self._screen.cursor.x, self._screen.cursor.y
        paint = "\x1b[H\x1b[2J" + "\r\n".join(lines) + f"\x1b[{y + 1};{x + 1}H"
        return {
            "cols": self._screen.columns,
            "rows": self._screen.lines,
            "lines": lines,
            "cursor": {"x": x, "y": y},
            "ansi": paint,
        }
