"""The benchmarks by name, in the order `python -m benchmarks` runs them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from benchmarks import (
    crash_detection,
    flood,
    footprint,
    pg_ingest,
    recovery,
    relay_latency,
    relay_throughput,
    resume,
    task_dispatch,
    task_throughput,
    terminal_flood,
)
from benchmarks.harness import Context
from benchmarks.stats import Figure

Benchmark = Callable[[Context], Awaitable[list[Figure]]]

BENCHMARKS: dict[str, Benchmark] = {
    relay_throughput.NAME: relay_throughput.run,
    relay_latency.NAME: relay_latency.run,
    crash_detection.NAME: crash_detection.run,
    recovery.NAME: recovery.run,
    resume.NAME: resume.run,
    footprint.NAME: footprint.run,
    flood.NAME: flood.run,
    pg_ingest.NAME: pg_ingest.run,
    terminal_flood.NAME: terminal_flood.run,
    task_dispatch.NAME: task_dispatch.run,
    task_throughput.NAME: task_throughput.run,
}
