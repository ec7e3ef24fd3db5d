"""Figure 5: resume, a viewer subscribing with after_seq 0 to a long session.

A flood fills one session; then each run connects a new viewer and times the subscribe
request until the event at the head seq arrives (every event in order, no gap), with a
viewer connected with `?batch=1` and with one that gets one message a frame. Baseline:
reading the same events from the same log file alone (`EventLog.read_payloads` in the
pages the daemon uses), after the daemon stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from benchmarks import harness as h
from benchmarks.relay_throughput import flood_args
from benchmarks.stats import Figure, Goal, Summary
from vm_agent.eventlog import EventLog

NAME = "resume"
PAGE = 500


@dataclass(frozen=True)
class Params:
    events: int
    repeats: int


SCALES = {
    "smoke": Params(events=500, repeats=1),
    "quick": Params(events=20_000, repeats=3),
    "full": Params(events=100_000, repeats=5),
}


async def _replay_once(
    tg: TaskGroup, d: h.Daemon, session_id: str, head: int, cpu: h.CpuWatch, *, batch: bool
) -> float:
    reached = anyio.Event()
    at: list[float] = []

    def hook(got: h.Received) -> None:
        if got.seq == head:
            at.append(got.at)
            reached.set()

    async with h.viewer(tg, d, hook, batch=batch) as v:
        with cpu.measure():
            start = time.time()
            await v.subscribe(session_id, 0)
            with anyio.fail_after(120):
                await reached.wait()
        # Events after `head` (the session settling) may follow: at least `head`, no gap.
        if v.gaps or v.received < head:
            raise RuntimeError(f"replay saw {v.gaps} gaps, {v.received} of {head} events")
        return at[0] - start


async def _read_alone(path: Path, session_id: str, head: int) -> float:
    async with EventLog.open(path, retention_bytes_per_session=1 << 40) as log:
        start = time.perf_counter()
        after = 0
        while after < head:
            page = await log.read_payloads(session_id, after, PAGE)
            after += len(page)
        return time.perf_counter() - start


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    agents = {"flood": flood_args(p.events, 40)}
    times: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, h.CpuWatch] = {}
    async with h.daemon(ctx.cp, ctx.scratch("daemon"), agents) as d:
        async with anyio.create_task_group() as tg:
            async with h.viewer(tg, d) as driver:
                session_id = await driver.start_session("flood", ctx.scratch("cwd"))
                with anyio.fail_after(300):
                    await driver.prompt(session_id, "go", h.prompt_id("fill"))
                head = await driver.head_seq(session_id)
                for batch in (True, False):
                    cpu = cpus[batch] = h.CpuWatch(d.pid)
                    for _ in range(p.repeats):
                        took = await _replay_once(tg, d, session_id, head, cpu, batch=batch)
                        times[batch].append(took)
            tg.cancel_scope.cancel()
        state_dir = d.state_dir
    alone = [
        await _read_alone(state_dir / "events.sqlite3", session_id, head) for _ in range(p.repeats)
    ]
    base = Summary.of(alone)
    figures: list[Figure] = []
    for batch in (True, False):
        value = Summary.of(times[batch])
        mode = "batched frames" if batch else "one message a frame"
        ctx.say(
            f"  {head} events, {mode}: {value.median:.3f} s (log read alone {base.median:.3f} s)"
        )
        figures.append(
            Figure(
                benchmark=NAME,
                name=f"subscribe after_seq 0 to the live edge ({head} events), {mode}",
                unit="s",
                value=value,
                baseline_name="log read alone",
                baseline=base,
                goals=(Goal("< 1.5 s", 1.5, "lower"),) if head >= 100_000 else (),
                note="the goal applies to 100,000 events (the full run); during the replay: "
                + cpus[batch].describe(),
                extra={"events": head, "batch": batch},
            )
        )
    return figures
