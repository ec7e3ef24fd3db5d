"""Figure 6: the daemon's memory with 0, 1, 16 and 64 sessions, and its CPU share with 64
sessions each streaming 100 events/s to a viewer.

Memory is the daemon's own VmRSS (agents are separate processes and not counted); the
baseline is a bare `python -c` interpreter. CPU is utime+stime of the daemon process over a
window, as a share of one core; the baseline is a bare reader (a thread doing `selectors`
and `json.loads` over the same 64 agents' stdout) over the same window. A viewer "falls
behind" when it is closed for overflow, sees a gap, or gets an update more than 1 s late.
The streaming agents are `ticker_agent.py` (plain blocking I/O), not the fake agent: 64
fake agents alone would take most of this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from benchmarks import harness as h
from benchmarks.procstat import children, cpu_seconds, rss_kb
from benchmarks.rawacp import RawAgent
from benchmarks.relay_latency import sent_at
from benchmarks.stats import Figure, Goal, Summary

NAME = "footprint"
LEVELS = (1, 16, 64)
TICKER = Path(__file__).with_name("ticker_agent.py")
BEHIND_S = 1.0
START_CONCURRENCY = 4


@dataclass(frozen=True)
class Params:
    sessions: int  # streaming sessions
    sustainable: int  # fewer sessions, that this machine can feed: daemon CPU per event
    window_s: float
    settle_s: float
    levels: tuple[int, ...] = LEVELS


SCALES = {
    "smoke": Params(sessions=2, sustainable=1, window_s=0.5, settle_s=0.2, levels=(1, 2)),
    "quick": Params(sessions=64, sustainable=16, window_s=4.0, settle_s=0.5),
    "full": Params(sessions=64, sustainable=16, window_s=8.0, settle_s=1.0),
}


def stream_chunks(p: Params) -> int:
    return int((p.window_s + 4 * p.settle_s + 5) * 100)  # outlasts the window


def stream_text(p: Params) -> str:
    return "stream"  # the ticker streams its --chunks whatever the prompt says


def stream_agent(p: Params) -> h.AgentCommand:
    """The streaming load: the ticker agent, light enough that 64 of them fit here."""
    chunks = stream_chunks(p)
    return h.AgentCommand(
        (sys.executable, str(TICKER), "--delay-ms", "10", "--chunks", str(chunks))
    )


def bare_python_rss_kb() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        return rss_kb(proc.pid)
    finally:
        proc.kill()
        proc.wait()


async def _rss(pid: int, settle_s: float) -> float:
    await anyio.sleep(settle_s)
    return rss_kb(pid) / 1024


async def start_sessions(driver: h.Viewer, agent: str, cwd: Path, count: int) -> list[str]:
    """Starts `count` sessions, a few at a time (agents start faster side by side)."""
    ids: list[str] = []
    limit = anyio.Semaphore(START_CONCURRENCY)

    async def one() -> None:
        async with limit:
            ids.append(await driver.start_session(agent, cwd))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return ids


async def memory(ctx: h.Context, p: Params) -> dict[int, float]:
    """RSS in MB by number of idle sessions (0 = idle daemon)."""
    out: dict[int, float] = {}
    cwd = ctx.scratch("cwd")
    async with h.daemon(
        ctx.cp, ctx.scratch("daemon-memory"), {"idle": ["--scenario", "echo"]}
    ) as d:
        out[0] = await _rss(d.pid, p.settle_s)
        async with anyio.create_task_group() as tg:
            async with h.viewer(tg, d) as driver:
                started = 0
                for level in p.levels:
                    await start_sessions(driver, "idle", cwd, level - started)
                    started = level
                    out[level] = await _rss(d.pid, p.settle_s)
            tg.cancel_scope.cancel()
    return out


@dataclass
class _Lag:
    worst: float = 0.0
    updates: int = 0

    def hook(self, got: h.Received) -> None:
        if got.type == "acp.update":
            self.updates += 1
            lag = got.at - sent_at(got.params()["data"])
            self.worst = max(self.worst, lag)


@dataclass
class Streamed:
    cpu_share: float
    worst_lag_s: float
    updates: int
    closed: int
    gaps: int
    agents_cpu_share: float  # the agents' own CPU, summed (they share the 2 cores)
    viewers_cpu_share: float  # this process (the viewers) over the same window


async def streaming(ctx: h.Context, p: Params, sessions: int) -> Streamed:
    """The daemon's CPU share over the window and what the viewers saw meanwhile."""
    cwd = ctx.scratch("cwd")
    lag = _Lag()
    async with (
        h.daemon(ctx.cp, ctx.scratch(f"daemon-cpu-{sessions}"), {"stream": stream_agent(p)}) as d,
        anyio.create_task_group() as tg,
    ):
        async with h.viewer(tg, d) as driver, anyio.create_task_group() as prompts:
            viewers: list[h.Viewer] = []
            sids = await start_sessions(driver, "stream", cwd, sessions)
            async with contextlib.AsyncExitStack() as stack:
                for sid in sids:
                    v = await stack.enter_async_context(h.viewer(tg, d, lag.hook))
                    await v.subscribe(sid, await driver.head_seq(sid))
                    viewers.append(v)
                # Every viewer is in place before the first prompt: all 64 stream together.
                for sid in sids:
                    prompts.start_soon(driver.prompt, sid, stream_text(p), h.prompt_id("s"))
                await anyio.sleep(2 * p.settle_s)  # every session streaming
                lag.worst = 0.0
                updates0 = lag.updates
                agents = children(d.pid)
                agents0, mine0 = _cpu_sum(agents), time.process_time()
                cpu0, t0 = cpu_seconds(d.pid), time.monotonic()
                await anyio.sleep(p.window_s)
                cpu1, t1 = cpu_seconds(d.pid), time.monotonic()
                agents1, mine1 = _cpu_sum(agents), time.process_time()
                result = Streamed(
                    cpu_share=(cpu1 - cpu0) / (t1 - t0),
                    worst_lag_s=lag.worst,
                    updates=lag.updates - updates0,
                    closed=sum(1 for v in viewers if v.close_code is not None),
                    gaps=sum(v.gaps for v in viewers),
                    agents_cpu_share=(agents1 - agents0) / (t1 - t0),
                    viewers_cpu_share=(mine1 - mine0) / (t1 - t0),
                )
                prompts.cancel_scope.cancel()
        tg.cancel_scope.cancel()
    return result


def _cpu_sum(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def bare_reader_cpu(p: Params, cwd: Path, sessions: int) -> tuple[float, int]:
    """CPU share of one thread reading as many streaming agents (json.loads per line), and
    the lines it read in the window."""
    agents = [RawAgent((), command=stream_agent(p).argv) for _ in range(sessions)]
    try:
        sel = selectors.DefaultSelector()
        for agent in agents:
            sid = agent.start(cwd)
            agent.send(
                {
                    "jsonrpc": "2.0",
                    "id": 99,
                    "method": "session/prompt",
                    "params": agent.prompt_params(sid, stream_text(p)),
                }
            )
            assert agent.proc.stdout is not None
            sel.register(agent.proc.stdout.fileno(), selectors.EVENT_READ)
        partial: dict[int, bytes] = {}
        lines_read = 0
        end_warm = time.monotonic() + 2 * p.settle_s
        measuring = False
        cpu0 = t0 = 0.0
        while True:
            now = time.monotonic()
            if not measuring and now >= end_warm:
                measuring, cpu0, t0 = True, time.thread_time(), now
            if measuring and now >= t0 + p.window_s:
                return (time.thread_time() - cpu0) / (now - t0), lines_read
            for key, _ in sel.select(0.05):
                fd = key.fd
                data = partial.pop(fd, b"") + os.read(fd, 1 << 16)
                *lines, rest = data.split(b"\n")
                partial[fd] = rest
                for line in lines:
                    json.loads(line)
                lines_read += len(lines) if measuring else 0
    finally:
        for agent in agents:
            agent.close()


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    bare = bare_python_rss_kb() / 1024
    mem = await memory(ctx, p)
    ctx.say("  RSS MB by sessions: " + ", ".join(f"{k}: {v:.1f}" for k, v in mem.items()))
    top, first = max(p.levels), min(p.levels)
    per_session = (mem[top] - mem[first]) / (top - first)
    st = await streaming(ctx, p, p.sessions)
    raw_cpu, _ = await anyio.to_thread.run_sync(bare_reader_cpu, p, ctx.scratch("cwd"), p.sessions)
    ctx.say(f"  CPU, {p.sessions} streaming: {st.cpu_share:.1%} (bare reader {raw_cpu:.1%})")
    few = await streaming(ctx, p, p.sustainable)
    few_raw, few_lines = await anyio.to_thread.run_sync(
        bare_reader_cpu, p, ctx.scratch("cwd"), p.sustainable
    )
    few_us = few.cpu_share * p.window_s / max(few.updates, 1) * 1e6
    few_raw_us = few_raw * p.window_s / max(few_lines, 1) * 1e6
    ctx.say(f"  {p.sustainable} streaming: {few_us:.0f} us/event (bare reader {few_raw_us:.0f})")
    behind = bool(st.closed or st.gaps or st.worst_lag_s > BEHIND_S)
    per_event_us = st.cpu_share * p.window_s / max(st.updates, 1) * 1e6
    bare_s = Summary.of([bare])
    figures = [
        Figure(
            NAME,
            "RSS idle",
            "MB",
            Summary.of([mem[0]]),
            "bare python -c",
            bare_s,
            (Goal("< 60 MB", 60.0, "lower"),),
        ),
    ]
    for level in p.levels:
        figures.append(
            Figure(
                NAME,
                f"RSS with {level} sessions",
                "MB",
                Summary.of([mem[level]]),
                "bare python -c",
                bare_s,
            )
        )
    figures += [
        Figure(
            NAME,
            f"RSS per session ({first} to {top})",
            "MB",
            Summary.of([per_session]),
            goals=(Goal("< 1 MB", 1.0, "lower"),),
        ),
        Figure(
            NAME,
            f"CPU with {p.sessions} sessions streaming 100 events/s",
            "% of one core",
            Summary.of([st.cpu_share * 100]),
            "bare reader thread",
            Summary.of([raw_cpu * 100]),
            (Goal("< 50%", 50.0, "lower"),),
            note=f"window {p.window_s:g} s; viewers behind: {'YES' if behind else 'none'} "
            f"(closed {st.closed}, gaps {st.gaps}, worst update lag "
            f"{st.worst_lag_s * 1000:.0f} ms, {st.updates} of "
            f"{int(p.sessions * 100 * p.window_s)} updates received in the window, "
            f"{per_event_us:.0f} us of daemon CPU per relayed event); "
            f"meanwhile the {p.sessions} agents used {st.agents_cpu_share:.0%} and the "
            f"viewers' process {st.viewers_cpu_share:.0%} of one core",
            void="the viewers fell behind, so the load was not relayed" if behind else "",
            extra={
                "viewers_behind": behind,
                "worst_lag_ms": st.worst_lag_s * 1000,
                "closed": st.closed,
                "gaps": st.gaps,
                "updates": st.updates,
                "agents_cpu_share": st.agents_cpu_share,
                "viewers_cpu_share": st.viewers_cpu_share,
            },
        ),
    ]
    figures.append(
        Figure(
            NAME,
            f"daemon CPU per relayed event, {p.sustainable} sessions streaming",
            "us",
            Summary.of([few_us]),
            "bare reader, per line",
            Summary.of([few_raw_us]),
            (Goal("< 78 us (50% of a core / 6400 events/s)", 78.0, "lower"),),
            note=f"{few.updates} updates in {p.window_s:g} s at {few.cpu_share:.0%} daemon CPU, "
            f"worst lag {few.worst_lag_s * 1000:.0f} ms; the agents used "
            f"{few.agents_cpu_share:.0%} of one core",
            extra={"updates": few.updates, "cpu_share": few.cpu_share},
        )
    )
    return figures
