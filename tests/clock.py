"""A settable clock for tests of expiry, rotation and deadlines."""

from __future__ import annotations


class FakeClock:
    """Returns ``now``; tests move it forward with ``advance``."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
