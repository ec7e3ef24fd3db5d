"""A person's terminal flooding output (``yes``) while another session streams a prompt.

Measured: the other session's relay latency (agent line to viewer, as ``relay_latency``)
with the flood going, next to the same without it, in the same run; and how many bytes a
second the flooding terminal put into the log, next to its budget (the daemon stops
reading the PTY past it, so the flood is paced rather than dropped).
"""

from __future__ import annotations

import time

import anyio

from benchmarks import harness as h
from benchmarks.relay_latency import SCALES, daemon_latencies, slow_args
from benchmarks.stats import Figure, Goal, Summary, percentile
from vm_agent.terminals.pty import Bounds

NAME = "terminal_flood"
# The flood's measured window (well past its burst), by scale.
WINDOW_S = {"smoke": 1.0, "quick": 5.0, "full": 8.0}


async def _flood_rate(d: h.Daemon, ctx: h.Context, stop: anyio.Event, out: list[float]) -> None:
    """Opens a terminal in its own session, runs `yes` in it until ``stop``; bytes/s logged."""
    logged = 0

    def count(got: h.Received) -> None:
        nonlocal logged
        if got.type == "terminal.output":
            logged += len(got.frame or "")

    async with anyio.create_task_group() as tg, h.viewer(tg, d, count) as v:
        sid = await v.start_session("slow", ctx.scratch("flood-cwd"))
        await v.subscribe(sid, await v.head_seq(sid))
        opened = await v.request("terminal/open", {"session_id": sid})
        ids = {"session_id": sid, "terminal_id": opened["terminal_id"]}
        await v.request("terminal/input", {**ids, "data": "yes flood-flood-flood-flood\r"})
        started = time.monotonic()
        await stop.wait()
        # Past the first burst, which the budget lets through at once.
        burst = Bounds().output_burst
        elapsed = max(time.monotonic() - started, 1e-9)
        out.append(max(0.0, logged - burst) / elapsed)
        ctx.say(f"  the terminal logged {logged / 1024:.0f} KiB in {elapsed:.1f} s")
        await v.request("terminal/close", ids)
        tg.cancel_scope.cancel()


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    rates: list[float] = []
    async with h.daemon(ctx.cp, ctx.scratch("daemon"), {"slow": slow_args(p)}) as d:
        quiet = await daemon_latencies(ctx, d, p)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_flood_rate, d, ctx, stop, rates)
            await anyio.sleep(0.5)  # the flood is under way (its rate is measured, not assumed)
            began = time.monotonic()
            flooded = await daemon_latencies(ctx, d, p)
            # The rate wants a window well past the burst.
            await anyio.sleep(max(0.0, WINDOW_S[ctx.scale] - (time.monotonic() - began)))
            stop.set()
    budget = Bounds().output_rate
    figures = []
    for q in (50, 99):
        value = Summary.of([percentile(r, q) * 1000 for r in flooded])
        base = Summary.of([percentile(r, q) * 1000 for r in quiet])
        ctx.say(f"  p{q} with a flooding terminal: {value.median:.3f} ms (quiet {base.median:.3f})")
        figures.append(
            Figure(
                benchmark=NAME,
                name=f"another session's agent line to viewer, p{q}, during a terminal flood",
                unit="ms",
                value=value,
                baseline_name="no flood",
                baseline=base,
                goals=(Goal("p99 < 5 ms", 5.0, "lower"),) if q == 99 else (),
                note="a terminal in another session runs `yes` meanwhile",
            )
        )
    rate = Summary.of([r / 1024 for r in rates])
    ctx.say(f"  terminal output into the log: {rate.median:.0f} KiB/s (budget {budget / 1024:.0f})")
    figures.append(
        Figure(
            benchmark=NAME,
            name="a flooding terminal's output into the log",
            unit="KiB/s",
            value=rate,
            goals=(Goal("within the budget (+15% JSON framing)", budget / 1024 * 1.15, "lower"),),
            note=f"budget {budget / 1024:.0f} KiB/s, counted past the first "
            f"{Bounds().output_burst / 1024:.0f} KiB burst, as event frames (JSON escapes \\r\\n)",
        )
    )
    return figures
