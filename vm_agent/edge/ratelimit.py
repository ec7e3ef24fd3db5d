"""How often a repeated log line may be written (pure: the caller passes the time).

Under a flood (connections refused, tokens forged, accept failing for want of
descriptors) one line per event would flood the journal too: a ``LogBudget`` lets a few
lines through per window and counts the rest, so the next line written can say how many
were left out.
"""

from __future__ import annotations


class LogBudget:
    def __init__(self, *, lines: int, window_s: float) -> None:
        if lines < 1 or window_s <= 0:
            raise ValueError("a log budget needs at least one line and a positive window")
        self.lines = lines
        self.window_s = window_s
        self._window_start: float | None = None
        self._used = 0
        self._suppressed = 0

    def take(self, now: float) -> int | None:
        """None: leave this line out. Otherwise write it, saying that this many like it
        were left out since the last one written (0: none)."""
        start = self._window_start
        if start is None or now - start >= self.window_s or now < start:
            self._window_start = now
            self._used = 0
        if self._used >= self.lines:
            self._suppressed += 1
            return None
        self._used += 1
        left_out, self._suppressed = self._suppressed, 0
        return left_out


def left_out_note(count: int) -> str:
    """The tail for a line that follows lines left out ("" when none were)."""
    return f" ({count} more like this not logged)" if count else ""
