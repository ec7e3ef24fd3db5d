"""The VM test's figures: what a run measured (boot to ready, each install step, the
unit's exposure), collected by the tests, printed at the end of the session and written
to ``figures.json`` and ``figures.md`` in the report directory. Figures, not assertions.

Parsing and rendering are pure (tested with tables); `FigureBook.write` is the one I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

# the runner's log of each step: "<step> <milliseconds>" or "<step> failed"
_TIMING = re.compile(r"^(?P<step>[a-z][a-z0-9-]*) (?:(?P<ms>\d+)|failed)$")
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (?P<level>\d+(?:\.\d+)?) (?P<word>\w+)")


@dataclass(frozen=True)
class StepTiming:
    step: str
    seconds: float | None  # None: the step failed


def parse_timings(text: str) -> list[StepTiming]:
    """The provisioning runner's timings file (cloud_init.scripts), in order."""
    steps = []
    for line in text.splitlines():
        match = _TIMING.match(line.strip())
        if match is None:
            continue
        ms = match["ms"]
        steps.append(StepTiming(match["step"], None if ms is None else int(ms) / 1000))
    return steps


def parse_exposure(text: str) -> tuple[float, str] | None:
    """`systemd-analyze security UNIT`'s last line: the level and its word (OK, MEDIUM...)."""
    found = _EXPOSURE.search(text)
    return None if found is None else (float(found["level"]), found["word"])


@dataclass(frozen=True)
class Figure:
    run: str  # which boot ("node", "unreachable", ...)
    name: str
    value: float | str
    unit: str = ""

    def line(self) -> str:
        value = f"{self.value:.1f}" if isinstance(self.value, float) else str(self.value)
        return f"{self.run}: {self.name}: {value}{' ' + self.unit if self.unit else ''}"


@dataclass
class FigureBook:
    figures: list[Figure] = field(default_factory=list)

    def add(self, run: str, name: str, value: float | str, unit: str = "") -> None:
        self.figures.append(Figure(run, name, value, unit))

    def lines(self) -> list[str]:
        return [f.line() for f in self.figures]

    def markdown(self) -> str:
        rows = ["| run | figure | value |", "|---|---|---|"]
        for f in self.figures:
            value = f"{f.value:.1f}" if isinstance(f.value, float) else str(f.value)
            rows.append(f"| {f.run} | {f.name} | {value}{' ' + f.unit if f.unit else ''} |")
        return "\n".join(rows) + "\n"

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        data = [asdict(f) for f in self.figures]
        (directory / "figures.json").write_text(json.dumps(data, indent=2) + "\n")
        (directory / "figures.md").write_text(self.markdown())
