"""Summaries and figures: pure, no I/O and no clocks."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """A median over repeated runs with its spread (min, max and the interquartile range)."""

    median: float
    low: float
    high: float
    q1: float
    q3: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("a summary needs at least one sample")
        values = [float(x) for x in samples]
        return cls(
            median=statistics.median(values),
            low=min(values),
            high=max(values),
            q1=percentile(values, 25),
            q3=percentile(values, 75),
            n=len(values),
        )

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0 when the median is 0)."""
        return (self.q3 - self.q1) / abs(self.median) if self.median else 0.0


@dataclass(frozen=True, slots=True)
class Goal:
    """`value` (or the ratio, when `on_ratio`) must be above or below `limit`."""

    text: str
    limit: float
    better: Better
    on_ratio: bool = False

    def met(self, value: float, ratio: float | None) -> bool | None:
        subject = ratio if self.on_ratio else value
        if subject is None or math.isnan(subject):
            return None
        return subject >= self.limit if self.better == "higher" else subject <= self.limit


@dataclass(frozen=True, slots=True)
class Figure:
    """One line of the table: a measured value next to its baseline from the same run."""

    benchmark: str
    name: str
    unit: str
    value: Summary
    baseline_name: str | None = None
    baseline: Summary | None = None
    goals: tuple[Goal, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Why the goals cannot be judged from this value (e.g. the load was not reached).
    void: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.median:
            return None
        return self.value.median / self.baseline.median

    def verdicts(self) -> list[tuple[Goal, bool | None]]:
        """Each goal and whether it is met (None: not assessable, see `void`)."""
        if self.void:
            return [(g, None) for g in self.goals]
        return [(g, g.met(self.value.median, self.ratio)) for g in self.goals]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "unit": self.unit,
            "value": asdict(self.value),
            "baseline_name": self.baseline_name,
            "baseline": asdict(self.baseline) if self.baseline is not None else None,
            "ratio": self.ratio,
            "goals": [
                {"text": g.text, "limit": g.limit, "better": g.better, "met": met}
                for g, met in self.verdicts()
            ],
            "note": self.note,
            "void": self.void,
            "extra": self.extra,
        }
