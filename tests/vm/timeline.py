"""A run's milestones, in seconds from qemu's start, and what the console says about them.

Pure: times are passed in (the harness reads the monotonic clock), so the report is
tested with tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

QEMU_START = "qemu_start"
FIRST_CONSOLE = "first_console_output"
KERNEL = "kernel_started"
SYSTEMD = "systemd_started"
CLOUD_INIT_START = "cloud_init_started"
CLOUD_INIT_FINAL = "cloud_init_final_finished"
AGENT_UP = "guest_agent_up"
CLOUD_INIT_DONE = "cloud_init_done"

# what the serial console prints at each milestone (color codes aside)
_CONSOLE_MARKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (KERNEL, re.compile(r"Linux version \d")),
    (SYSTEMD, re.compile(r"Welcome to .*Debian|systemd\[1\]: systemd \d")),
    # systemd starting cloud-init's first unit (its status line may be cut short)
    (CLOUD_INIT_START, re.compile(r"Starting .*cloud-init-local")),
    (CLOUD_INIT_FINAL, re.compile(r"Cloud-init v\. \S+ finished at")),
)


def console_mark(line: str) -> str | None:
    """The milestone a console line shows, if any."""
    for name, pattern in _CONSOLE_MARKS:
        if pattern.search(line):
            return name
    return None


@dataclass
class Timeline:
    """Milestones as seconds since the run's origin (qemu's start); the first of each
    name counts."""

    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, seconds: float) -> None:
        self.marks.setdefault(name, seconds)

    def since(self, name: str, origin: str = QEMU_START) -> float | None:
        """Seconds from `origin` to `name`, or None if either has not happened."""
        if name not in self.marks or (origin != QEMU_START and origin not in self.marks):
            return None
        return self.marks[name] - self.marks.get(origin, 0.0)

    def report(self) -> list[str]:
        lines = []
        for name, at in sorted(self.marks.items(), key=lambda item: item[1]):
            line = f"{name}: {at:.1f} s from qemu start"
            from_cloud_init = self.since(name, CLOUD_INIT_START)
            if from_cloud_init is not None and from_cloud_init >= 0 and name != CLOUD_INIT_START:
                line += f", {from_cloud_init:.1f} s from cloud-init's start"
            lines.append(line)
        return lines
