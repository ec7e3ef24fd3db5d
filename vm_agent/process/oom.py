"""OOM-kill evidence from the kernel: the cgroup v2 ``memory.events`` ``oom_kill`` counter.

An agent that died of SIGKILL while this counter rose was most likely killed by the OOM
killer. Where the platform does not expose it (no cgroup v2), we say "unknown" (None)
rather than guess.
"""

from __future__ import annotations

from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup_events() -> Path | None:
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            path = _CGROUP_ROOT / line[3:].lstrip("/") / "memory.events"
            return path if path.exists() else None
    return None


def oom_kill_count(events_file: Path | None = None) -> int | None:
    path = events_file or _own_cgroup_events()
    if path is None:
        return None
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def was_oom_killed(signal: int | None, before: int | None, after: int | None) -> bool:
    """SIGKILL (9) while the cgroup's OOM-kill counter went up."""
    return signal == 9 and before is not None and after is not None and after > before
