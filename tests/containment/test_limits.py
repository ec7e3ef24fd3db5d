"""A session's limits from its reservation, and the cgroup files: tables of cases (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from vm_agent.containment.limits import LimitDefaults, Limits, limits_for, unenforced

DEFAULTS = LimitDefaults(memory_mb=2048, cpu_millis=None, pids_max=4096, swap_mb=0)


@pytest.mark.parametrize(
    ("reservation", "memory", "cpu"),
    [
        (None, 2048, None),
        ({}, 2048, None),
        ({"cpuMillis": 2000, "memoryMb": 4096, "source": "task"}, 4096, 2000),
        ({"cpuMillis": 500}, 2048, 500),
        ({"memoryMb": 1536.0}, 1536, None),  # a whole float is a whole number
        ({"memoryMb": 0, "cpuMillis": 0}, 2048, None),  # zero claims nothing
        ('{"cpuMillis": 1000, "memoryMb": 512}', 512, 1000),  # JSON text
        ("task-7", 2048, None),  # an opaque id carries no limits
    ],
)
def test_limits_for(reservation: Any, memory: int, cpu: int | None) -> None:
    limits = limits_for(reservation, DEFAULTS)
    assert (limits.memory_mb, limits.cpu_millis, limits.pids_max) == (memory, cpu, 4096)


@pytest.mark.parametrize(
    ("reservation", "message"),
    [
        ({"memoryMb": -1}, "must not be negative"),
        ({"cpuMillis": "lots"}, "whole number"),
        ({"cpuMillis": 1.5}, "whole number"),
        ({"memoryMb": True}, "whole number"),
    ],
)
def test_a_malformed_reservation_is_refused(reservation: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        limits_for(reservation, DEFAULTS)


@pytest.mark.parametrize(
    ("limits", "files"),
    [
        (
            Limits(memory_mb=512, cpu_millis=500, pids_max=100, swap_mb=0),
            {
                "memory.max": str(512 * 1024 * 1024),
                "memory.swap.max": "0",
                "memory.oom.group": "1",
                "cpu.max": "50000 100000",
                "pids.max": "100",
            },
        ),
        (
            Limits(memory_mb=None, cpu_millis=2000, pids_max=None, swap_mb=0),
            {"memory.oom.group": "1", "cpu.max": "200000 100000"},
        ),
        (
            Limits(memory_mb=1, cpu_millis=1, pids_max=None, swap_mb=None),
            # The kernel's smallest quota is 1 ms; swap left to the kernel.
            {
                "memory.max": "1048576",
                "memory.swap.max": "max",
                "memory.oom.group": "1",
                "cpu.max": "1000 100000",
            },
        ),
    ],
)
def test_files(limits: Limits, files: dict[str, str]) -> None:
    assert limits.files() == files


def test_unenforced_names_the_files_whose_controller_is_missing() -> None:
    files = Limits(512, 500, 100, 0).files()
    assert unenforced(files, frozenset()) == list(files)
    assert unenforced(files, frozenset({"memory", "cpu", "pids"})) == []
    assert unenforced(files, frozenset({"memory"})) == ["cpu.max", "pids.max"]
