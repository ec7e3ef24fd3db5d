"""Figure 1: relay throughput of a flood to 1 and 10 viewers, against stdio baselines.

Each size and number of viewers runs twice: viewers connected with `?batch=1` (frames hold
JSON-RPC batches when events queue up) and viewers that get one message a frame.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import anyio

from benchmarks import harness as h
from benchmarks.rawacp import acp_flood, raw_flood
from benchmarks.stats import Figure, Goal, Summary

NAME = "relay_throughput"


@dataclass(frozen=True)
class Params:
    count: int
    repeats: int
    sizes: tuple[int, ...] = (40, 1024)
    viewers: tuple[int, ...] = (1, 10)
    batch_modes: tuple[bool, ...] = (True, False)


SCALES = {
    "smoke": Params(count=200, repeats=1, viewers=(1, 3)),
    "quick": Params(count=5_000, repeats=3),
    "full": Params(count=10_000, repeats=3),
}
PROMPT_TIMEOUT_S = 120.0


def flood_args(count: int, size: int) -> list[str]:
    return ["--scenario", "flood", "--count", str(count), "--size", str(size)]


async def _daemon_rates(
    ctx: h.Context,
    d: h.Daemon,
    agent: str,
    *,
    count: int,
    viewers: int,
    repeats: int,
    cpu: h.CpuWatch,
    batch: bool,
) -> list[float]:
    """Events/s of each prompt's flood, until the last update reached the last viewer."""
    progress = h.Progress("acp.update", viewers)
    rates: list[float] = []
    async with (
        anyio.create_task_group() as tg,
        h.viewer(tg, d) as driver,
        contextlib.AsyncExitStack() as stack,
    ):
        session_id = await driver.start_session(agent, ctx.scratch("cwd"))
        head = await driver.head_seq(session_id)
        connected: list[h.Viewer] = []
        for _ in range(viewers):
            v = await stack.enter_async_context(h.viewer(tg, d, progress.hook, batch=batch))
            progress.bind(v)
            connected.append(v)
        for v in connected:
            await v.subscribe(session_id, head)
        for rep in range(repeats):
            progress.expect(count)
            with anyio.fail_after(PROMPT_TIMEOUT_S), cpu.measure():
                async with anyio.create_task_group() as run:
                    start = time.time()
                    run.start_soon(progress.done.wait)
                    outcome = await driver.prompt(session_id, "go", h.prompt_id(f"f{rep}"))
            if outcome.get("outcome") != "completed":
                raise RuntimeError(f"flood prompt ended {outcome}")
            bad = [v for v in connected if v.gaps or v.close_code is not None]
            if bad:
                raise RuntimeError(
                    f"{len(bad)} viewers saw gaps or were closed "
                    f"({bad[0].close_code} {bad[0].close_reason})"
                )
            rates.append(count / (progress.finished_at - start))
        tg.cancel_scope.cancel()
    return rates


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    cwd = ctx.scratch("cwd")
    raw: dict[int, list[float]] = {}
    acp: dict[int, list[float]] = {}
    for size in p.sizes:
        args = flood_args(p.count, size)
        raw[size] = []
        acp[size] = []
        for _ in range(p.repeats):
            took = await anyio.to_thread.run_sync(raw_flood, args, cwd, p.count)
            raw[size].append(p.count / took)
            acp[size].append(p.count / await acp_flood(args, cwd, p.count))
        ctx.say(
            f"  {size} B: raw {Summary.of(raw[size]).median:,.0f}/s, "
            f"acp {Summary.of(acp[size]).median:,.0f}/s"
        )

    agents = {f"flood-{size}": flood_args(p.count, size) for size in p.sizes}
    relayed: dict[tuple[int, int, bool], tuple[Summary, str]] = {}
    async with h.daemon(ctx.cp, ctx.scratch("daemon"), agents) as d:
        for size in p.sizes:
            for viewers in p.viewers:
                for batch in p.batch_modes:
                    cpu = h.CpuWatch(d.pid)
                    rates = await _daemon_rates(
                        ctx,
                        d,
                        f"flood-{size}",
                        count=p.count,
                        viewers=viewers,
                        repeats=p.repeats,
                        cpu=cpu,
                        batch=batch,
                    )
                    relayed[(size, viewers, batch)] = (Summary.of(rates), cpu.describe())
                    ctx.say(
                        f"  {size} B to {viewers} viewers, {_mode(batch)}: "
                        f"{Summary.of(rates).median:,.0f}/s ({cpu.describe()})"
                    )

    figures: list[Figure] = []
    ratio_goals = {
        "raw": Goal("ratio >= 0.5", 0.5, "higher", on_ratio=True),
        "acp": Goal("ratio > 1", 1.0, "higher", on_ratio=True),
        "raw-many": Goal("ratio >= 0.35", 0.35, "higher", on_ratio=True),
    }
    for size in p.sizes:
        label = "1 KB" if size == 1024 else f"{size} B"
        raw_s, acp_s = Summary.of(raw[size]), Summary.of(acp[size])
        one, many = min(p.viewers), max(p.viewers)
        rows = [
            (one, "raw stdout reader", raw_s, ratio_goals["raw"]),
            (one, "acp ClientSideConnection", acp_s, ratio_goals["acp"]),
            (many, "raw stdout reader", raw_s, ratio_goals["raw-many"]),
        ]
        for batch in p.batch_modes:
            for viewers, base_name, base, goal in rows:
                value, cpu_note = relayed[(size, viewers, batch)]
                plural = "s" if viewers > 1 else ""
                figures.append(
                    Figure(
                        benchmark=NAME,
                        name=f"{label} chunks to {viewers} viewer{plural}, {_mode(batch)}",
                        unit="events/s",
                        value=value,
                        baseline_name=base_name,
                        baseline=base,
                        goals=(goal,),
                        note=f"{p.count} updates a run, from the prompt request to the last "
                        f"update at the last viewer; {cpu_note}",
                        extra={"count": p.count, "batch": batch},
                    )
                )
    return figures


def _mode(batch: bool) -> str:
    return "batched frames" if batch else "one message a frame"
