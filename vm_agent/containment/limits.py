"""A session's resource limits from its reservation, and the cgroup files that apply them. Pure.

The reservation is the control plane's resolved reservation JSON (camelCase: ``cpuMillis``,
``memoryMb``); what it leaves out comes from the daemon's settings. Swap is limited too:
with swap allowed, a session past ``memory.max`` would page out instead of being stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024
CPU_PERIOD_US = 100_000
# The kernel refuses a cpu.max quota below 1 ms.
_MIN_QUOTA_US = 1_000


@dataclass(frozen=True, slots=True)
class LimitDefaults:
    memory_mb: int | None = None  # None: no memory.max
    cpu_millis: int | None = None  # None: no cpu.max
    pids_max: int | None = 4096
    swap_mb: int | None = 0  # None: swap as the kernel likes


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int | None
    cpu_millis: int | None
    pids_max: int | None
    swap_mb: int | None

    def files(self) -> dict[str, str]:
        """cgroup v2 interface files and values, in the order they should be written."""
        out: dict[str, str] = {}
        if self.memory_mb is not None:
            out["memory.max"] = str(self.memory_mb * MiB)
            out["memory.swap.max"] = "max" if self.swap_mb is None else str(self.swap_mb * MiB)
        # The whole session is one workload: an OOM kill takes all of it, not a random child.
        out["memory.oom.group"] = "1"
        if self.cpu_millis is not None:
            quota = max(_MIN_QUOTA_US, self.cpu_millis * CPU_PERIOD_US // 1000)
            out["cpu.max"] = f"{quota} {CPU_PERIOD_US}"
        if self.pids_max is not None:
            out["pids.max"] = str(self.pids_max)
        return out

    def describe(self) -> str:
        parts = [
            f"memory {self.memory_mb} MB" if self.memory_mb is not None else "memory unlimited",
            f"cpu {self.cpu_millis}m" if self.cpu_millis is not None else "cpu unlimited",
            f"pids {self.pids_max}" if self.pids_max is not None else "pids unlimited",
        ]
        return ", ".join(parts)


def controller_of(file: str) -> str:
    return file.partition(".")[0]


def unenforced(files: Mapping[str, str], controllers: frozenset[str]) -> list[str]:
    """The files whose controller this cgroup does not have."""
    return [name for name in files if controller_of(name) not in controllers]


def _field(reservation: Mapping[str, Any], key: str) -> int | None:
    value = reservation.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"reservation {key} must be a whole number, not {value!r}")
    if value < 0:
        raise ValueError(f"reservation {key} must not be negative, got {value}")
    # Zero claims nothing: the default applies.
    return int(value) or None


def reservation_mapping(reservation: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The reservation as a mapping: JSON text is parsed; an opaque id carries no limits."""
    if reservation is None:
        return {}
    if isinstance(reservation, str):
        try:
            parsed = json.loads(reservation)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return reservation


def limits_for(reservation: str | Mapping[str, Any] | None, defaults: LimitDefaults) -> Limits:
    """Raises ``ValueError`` with a message for a person when the reservation is malformed."""
    res = reservation_mapping(reservation)
    memory = _field(res, "memoryMb")
    cpu = _field(res, "cpuMillis")
    return Limits(
        memory_mb=memory if memory is not None else defaults.memory_mb,
        cpu_millis=cpu if cpu is not None else defaults.cpu_millis,
        pids_max=defaults.pids_max,
        swap_mb=defaults.swap_mb,
    )
