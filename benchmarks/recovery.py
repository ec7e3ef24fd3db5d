"""Figure 4: recovery, from an agent's SIGKILL mid-prompt to the `recovered` outcome.

Each run has its own `sigkill-mid-prompt --once --state-dir` agent (the crash marker lives in
the state directory): the first process dies after two chunks, the daemon starts a new one
that loads the session. The baseline is that agent's own start-and-load time measured alone
(spawn, `initialize`, `session/load` answered) with the same transcript, after the daemon
stopped; the overhead is the median recovery minus the median start-and-load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio

from benchmarks import harness as h
from benchmarks.crash_detection import CrashWatch, crash_once
from benchmarks.rawacp import raw_start_and_load
from benchmarks.stats import Figure, Goal, Summary

NAME = "recovery"


@dataclass(frozen=True)
class Params:
    repeats: int


SCALES = {"smoke": Params(repeats=2), "quick": Params(repeats=8), "full": Params(repeats=20)}


def agent_args(state_dir: Path) -> list[str]:
    return [
        "--scenario",
        "sigkill-mid-prompt",
        "--after-chunks",
        "2",
        "--timestamps",
        "--once",
        "--state-dir",
        str(state_dir),
    ]


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    cwd = ctx.scratch("cwd")
    dirs = [ctx.scratch(f"agent-state-{i}") for i in range(p.repeats)]
    agents = {f"recover-{i}": agent_args(dirs[i]) for i in range(p.repeats)}
    recovery: list[float] = []
    detected: list[float] = []
    acp_ids: list[str] = []
    async with (
        h.daemon(ctx.cp, ctx.scratch("daemon"), agents) as d,
        anyio.create_task_group() as tg,
    ):
        async with h.viewer(tg, d) as driver:
            for i in range(p.repeats):
                watch = CrashWatch(done_on="prompt.finished")
                await crash_once(d, tg, driver, watch, agent=f"recover-{i}", cwd=cwd)
                if watch.outcome.get("outcome") != "recovered":
                    raise RuntimeError(f"expected a recovered outcome, got {watch.outcome}")
                recovery.append(watch.seen["prompt.finished"] - watch.last_sent_at)
                detected.append(watch.seen["state:recovering"] - watch.last_sent_at)
                described = await driver.request("session/list")
                for s in described["sessions"]:
                    if s["session_id"] == watch.session_id:
                        acp_ids.append(str(s["acp_session_id"]))
        tg.cancel_scope.cancel()
    alone = [
        await anyio.to_thread.run_sync(raw_start_and_load, agent_args(dirs[i]), cwd, acp_ids[i])
        for i in range(p.repeats)
    ]
    rec_ms = Summary.of([x * 1000 for x in recovery])
    alone_ms = Summary.of([x * 1000 for x in alone])
    overhead = [x * 1000 - alone_ms.median for x in recovery]
    ctx.say(f"  recovery {rec_ms.median:.1f} ms, start-and-load alone {alone_ms.median:.1f} ms")
    return [
        Figure(
            benchmark=NAME,
            name="SIGKILL to recovered outcome at a viewer",
            unit="ms",
            value=rec_ms,
            baseline_name="agent start-and-load alone",
            baseline=alone_ms,
            extra={"kill_to_recovering_state_ms": Summary.of([x * 1000 for x in detected]).median},
        ),
        Figure(
            benchmark=NAME,
            name="recovery overhead (recovery - start-and-load)",
            unit="ms",
            value=Summary.of(overhead),
            goals=(Goal("< 100 ms", 100.0, "lower"),),
            note="each recovery minus the median start-and-load time of the same agent alone",
        ),
    ]
