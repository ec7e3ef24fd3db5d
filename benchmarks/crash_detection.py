"""Figure 3: crash detection, from an agent's SIGKILL to its crash report at a viewer.

The `sigkill-mid-prompt` agent (with `--timestamps`) writes two chunks and kills itself right
after writing the second: that chunk's send time is taken as the moment of the kill (it
precedes the kill by microseconds, so it can only overstate the detection time). The daemon
runs with `RESTART_BUDGET=0`, so the crash is reported at once instead of after a recovery.
Baseline: the raw reader seeing EOF on the agent's stdout after the same kill.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from benchmarks import harness as h
from benchmarks.rawacp import RawAgent
from benchmarks.relay_latency import sent_at
from benchmarks.stats import Figure, Goal, Summary, percentile

NAME = "crash_detection"
CRASH_ARGS = ["--scenario", "sigkill-mid-prompt", "--after-chunks", "2", "--timestamps"]


@dataclass(frozen=True)
class Params:
    repeats: int


SCALES = {"smoke": Params(repeats=2), "quick": Params(repeats=10), "full": Params(repeats=25)}


@dataclass
class CrashWatch:
    """What one viewer saw of a session around a crash: wall-clock times of receipt."""

    session_id: str = ""
    last_sent_at: float = 0.0  # send time of the last chunk before the kill
    seen: dict[str, float] = field(default_factory=dict)  # first receipt per marker
    outcome: dict[str, Any] = field(default_factory=dict)
    done: anyio.Event = field(default_factory=anyio.Event)
    done_on: str = "agent.crash_report"

    def hook(self, got: h.Received) -> None:
        if got.session_id != self.session_id:
            return
        if got.type == "acp.update":
            self.last_sent_at = sent_at(got.params()["data"])
            return
        if got.type == "session.state":
            state = got.params()["data"]["state"]
            self.seen.setdefault(f"state:{state}", got.at)
        elif got.type == "prompt.finished":
            self.outcome = got.params()["data"]
        self.seen.setdefault(got.type, got.at)
        if got.type == self.done_on:
            self.done.set()


async def crash_once(
    d: h.Daemon, tg: TaskGroup, driver: h.Viewer, watch: CrashWatch, *, agent: str, cwd: Path
) -> None:
    """Starts a session of `agent`, subscribes `watch` and runs a prompt that kills the agent."""
    async with h.viewer(tg, d, watch.hook) as watcher:
        watch.session_id = await driver.start_session(agent, cwd)
        await watcher.subscribe(watch.session_id, 0)
        with anyio.fail_after(60):
            await driver.prompt(watch.session_id, "abcdefgh", h.prompt_id("crash"))
            await watch.done.wait()
        if watcher.gaps:
            raise RuntimeError("the viewer saw a gap in the session's events")


def raw_detection(cwd: Path) -> float:
    with RawAgent(CRASH_ARGS) as agent:
        session_id = agent.start(cwd)
        last: list[float] = []

        def on_line(msg: dict[str, Any]) -> None:
            if msg.get("method") == "session/update":
                last.append(sent_at(msg["params"]))

        try:
            agent.request("session/prompt", agent.prompt_params(session_id, "abcdefgh"), on_line)
        except EOFError:
            return time.time() - last[-1]
    raise RuntimeError("the agent answered instead of dying")


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    cwd = ctx.scratch("cwd")
    raw = [await anyio.to_thread.run_sync(raw_detection, cwd) for _ in range(p.repeats)]
    samples: list[float] = []
    env = {"VM_AGENT_RESTART_BUDGET": "0"}
    async with (
        h.daemon(ctx.cp, ctx.scratch("daemon"), {"crash": CRASH_ARGS}, env) as d,
        anyio.create_task_group() as tg,
    ):
        async with h.viewer(tg, d) as driver:
            for _ in range(p.repeats):
                watch = CrashWatch()
                await crash_once(d, tg, driver, watch, agent="crash", cwd=cwd)
                if watch.outcome.get("outcome") != "crashed":
                    raise RuntimeError(f"expected a crashed outcome, got {watch.outcome}")
                samples.append(watch.seen["agent.crash_report"] - watch.last_sent_at)
        tg.cancel_scope.cancel()
    ms = [x * 1000 for x in samples]
    raw_ms = [x * 1000 for x in raw]
    figures = []
    for q, goal in ((50, None), (99, Goal("p99 < 50 ms", 50.0, "lower"))):
        value = Summary.of([percentile(ms, q)]) if q != 50 else Summary.of(ms)
        base = Summary.of([percentile(raw_ms, q)]) if q != 50 else Summary.of(raw_ms)
        ctx.say(f"  p{q}: {value.median:.2f} ms (raw reader's EOF {base.median:.2f} ms)")
        figures.append(
            Figure(
                benchmark=NAME,
                name=f"SIGKILL to crash report at a viewer, p{q}",
                unit="ms",
                value=value,
                baseline_name="raw reader sees EOF",
                baseline=base,
                goals=(goal,) if goal else (),
                note=f"{p.repeats} crashes, one session each; p50 shows the spread of all "
                "crashes, p99 is one figure over all of them",
                extra={"samples_ms": ms},
            )
        )
    return figures
