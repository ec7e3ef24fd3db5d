"""Figure 2: relay latency, from the agent writing a line to a viewer receiving it.

The slow fake agent runs with `--timestamps`: it stamps `time.time()` into each update's
`_meta` right before writing the line; the viewer subtracts that from its own `time.time()`
at receipt (same machine, same clock). The baseline is the raw stdout reader doing the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from benchmarks import harness as h
from benchmarks.rawacp import RawAgent
from benchmarks.stats import Figure, Goal, Summary, percentile
from vm_agent.fake_agent.turn import SENT_AT

NAME = "relay_latency"


@dataclass(frozen=True)
class Params:
    chunks: int
    repeats: int
    delay_ms: int = 10


SCALES = {
    "smoke": Params(chunks=20, repeats=1),
    "quick": Params(chunks=200, repeats=3),
    "full": Params(chunks=300, repeats=5),
}


def slow_args(p: Params) -> list[str]:
    return [
        "--scenario",
        "slow",
        "--delay-ms",
        str(p.delay_ms),
        "--chunks",
        str(p.chunks),
        "--timestamps",
    ]


def sent_at(update_params: dict[str, object]) -> float:
    update = update_params["update"]
    assert isinstance(update, dict)
    return float(update["_meta"][SENT_AT])


def raw_latencies(p: Params, cwd: Path) -> list[float]:
    out: list[float] = []
    with RawAgent(slow_args(p)) as agent:
        session_id = agent.start(cwd)

        def on_line(msg: dict[str, object]) -> None:
            now = time.time()
            if msg.get("method") == "session/update":
                params = msg["params"]
                assert isinstance(params, dict)
                out.append(now - sent_at(params))

        agent.request(
            "session/prompt", agent.prompt_params(session_id, "x" * p.chunks * 4), on_line
        )
    if len(out) != p.chunks:
        raise RuntimeError(f"raw reader got {len(out)} of {p.chunks} updates")
    return out


async def daemon_latencies(ctx: h.Context, d: h.Daemon, p: Params) -> list[list[float]]:
    runs: list[list[float]] = []
    samples: list[float] = []
    all_in = anyio.Event()

    def hook(got: h.Received) -> None:
        if got.type == "acp.update":
            samples.append(got.at - sent_at(got.params()["data"]))
            if len(samples) == p.chunks:
                all_in.set()

    async with (
        anyio.create_task_group() as tg,
        h.viewer(tg, d) as driver,
        h.viewer(tg, d, hook) as watcher,
    ):
        session_id = await driver.start_session("slow", ctx.scratch("cwd"))
        await watcher.subscribe(session_id, await driver.head_seq(session_id))
        for rep in range(p.repeats):
            samples = []
            all_in = anyio.Event()
            outcome = await driver.prompt(session_id, "x" * p.chunks * 4, h.prompt_id(f"l{rep}"))
            if outcome.get("outcome") != "completed":
                raise RuntimeError(f"slow prompt ended {outcome}")
            with anyio.fail_after(10):
                await all_in.wait()
            if watcher.gaps or watcher.close_code is not None:
                raise RuntimeError(f"the viewer saw gaps or was closed ({watcher.close_code})")
            runs.append(samples)
        tg.cancel_scope.cancel()
    return runs


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    cwd = ctx.scratch("cwd")
    raw_runs = [await anyio.to_thread.run_sync(raw_latencies, p, cwd) for _ in range(p.repeats)]
    async with h.daemon(ctx.cp, ctx.scratch("daemon"), {"slow": slow_args(p)}) as d:
        runs = await daemon_latencies(ctx, d, p)
    figures = []
    for q, goal in ((50, None), (99, Goal("p99 < 5 ms", 5.0, "lower"))):
        value = Summary.of([percentile(r, q) * 1000 for r in runs])
        base = Summary.of([percentile(r, q) * 1000 for r in raw_runs])
        ctx.say(f"  p{q}: {value.median:.3f} ms (raw reader {base.median:.3f} ms)")
        figures.append(
            Figure(
                benchmark=NAME,
                name=f"agent line to 1 viewer, p{q}",
                unit="ms",
                value=value,
                baseline_name="raw stdout reader",
                baseline=base,
                goals=(goal,) if goal else (),
                note=f"one chunk every {p.delay_ms} ms, {p.chunks} chunks a run; the agent "
                "stamps time.time() in the update's _meta just before writing the line",
                extra={"chunks": p.chunks, "max_ms": max(max(r) for r in runs) * 1000},
            )
        )
    return figures
