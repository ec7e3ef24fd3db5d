"""A byte budget per second with a burst: a token bucket. Pure (the time comes in)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ByteBudget:
    rate: float  # bytes a second, refilled continuously
    burst: float  # at most this much at once
    tokens: float = field(default=-1.0)
    last: float | None = None

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if self.last is not None and now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now if self.last is None else max(self.last, now)

    def take(self, now: float, size: int) -> bool:
        """Spends ``size`` if the budget has it now (input: refused otherwise)."""
        self._refill(now)
        if size > self.tokens:
            return False
        self.tokens -= size
        return True

    def wait_for(self, now: float, size: int) -> float:
        """Spends ``size`` (going into debt) and says how long to pause before the next spend.

        Output is never dropped: its reader pauses instead, so the program writing to the
        terminal blocks on a full PTY (flow control) rather than flooding the log.
        """
        self._refill(now)
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
