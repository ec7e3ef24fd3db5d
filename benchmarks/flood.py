"""Figure 7: real viewers while strangers flood the viewer port (issue 15).

The daemon runs with its default connection caps. Strangers come from other loopback
addresses (127.0.0.2, ...), as they would from the network: silent sockets held open and
reopened as soon as the daemon drops them (slow loris), unauthenticated websockets pushing
4 MiB frames before any auth, and upgrades with forged tokens. Meanwhile real viewers,
connected with a token before the flood, run prompts against their own sessions.

Reported: the real viewers' prompt latency against the same prompts on the same daemon with
no flood (the idle baseline, measured first in the same run); the daemon's RSS growth over
the flood (its peak) and what is still held after it; and whether the daemon stayed up.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from anyio.streams.text import TextReceiveStream
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from benchmarks import harness as h
from benchmarks.procstat import rss_kb
from benchmarks.stats import Figure, Goal, Summary, percentile
from vm_agent.runtime.settings import Settings

NAME = "flood"


@dataclass(frozen=True)
class Params:
    holders: int  # silent sockets held open, across `addresses`
    addresses: int
    pushers: int  # unauthenticated websockets pushing fat frames
    forgers: int  # upgrades with forged tokens, one after another each
    viewers: int  # real viewers, one session each
    prompts: int  # per viewer, in each phase
    new_viewers: int  # fresh connections, one after another, in each phase
    redial_s: float = 0.05  # a dropped holder reconnects after this


SCALES = {
    "smoke": Params(
        holders=12, addresses=2, pushers=1, forgers=1, viewers=1, prompts=3, new_viewers=2
    ),
    "quick": Params(
        holders=200, addresses=8, pushers=6, forgers=2, viewers=3, prompts=20, new_viewers=10
    ),
    "full": Params(
        holders=400, addresses=8, pushers=12, forgers=4, viewers=4, prompts=50, new_viewers=20
    ),
}
# The daemon's own defaults for the caps (the harness loosens them for other benchmarks).
DEFAULT_CAPS = {
    f"VM_AGENT_{name.upper()}": str(Settings.model_fields[name].default)
    for name in (
        "max_connections",
        "max_connections_per_address",
        "max_unauthenticated",
        "max_unauthenticated_per_address",
        "max_new_connections_per_address_per_s",
    )
}


async def _prompts(viewers: list[tuple[h.Viewer, str]], p: Params, phase: str) -> list[float]:
    """Every viewer runs `p.prompts` prompts one after another; latencies in ms."""
    out: list[float] = []

    async def one(v: h.Viewer, session_id: str, index: int) -> None:
        for k in range(p.prompts):
            began = time.perf_counter()
            outcome = await v.prompt(session_id, "hello", h.prompt_id(f"{phase}{index}-{k}"))
            out.append((time.perf_counter() - began) * 1000)
            if outcome.get("outcome") != "completed":
                raise RuntimeError(f"a real viewer's prompt ended {outcome}")

    async with anyio.create_task_group() as tg:
        for index, (v, session_id) in enumerate(viewers):
            tg.start_soon(one, v, session_id, index)
    return out


async def _metrics(d: h.Daemon, token: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(
            f"http://127.0.0.1:{d.port}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
    r.raise_for_status()
    values: dict[str, float] = {}
    for line in r.text.splitlines():
        if line.startswith("vm_agent_") and " " in line:
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


@dataclass
class Measured:
    idle: list[float]
    under: list[float]
    after: list[float]
    connect_idle: list[float]
    connect_under: list[float]
    rss_before_kb: int
    rss_peak_kb: int
    rss_after_kb: int
    flood_s: float
    during: dict[str, float]
    attack: dict[str, Any]
    up: bool


async def _unauthenticated_gone(d: h.Daemon, token: str) -> None:
    key = 'vm_agent_connections{state="unauthenticated"}'
    for _ in range(600):
        if (await _metrics(d, token)).get(key, 0) == 0:
            return
        await anyio.sleep(0.1)
    raise RuntimeError("the strangers' connections were not let go within 60 s")


async def _measure(
    d: h.Daemon, viewers: list[tuple[h.Viewer, str]], p: Params, token: str
) -> Measured:
    await _prompts(viewers, p, "warm")
    idle = await _prompts(viewers, p, "idle")
    connect_idle = await _new_viewers(d, p.new_viewers)
    before = peak = rss_kb(d.pid)
    argv = [
        sys.executable, "-m", "benchmarks.flood_attack", "--port", str(d.port),
        "--holders", str(p.holders), "--addresses", str(p.addresses),
        "--pushers", str(p.pushers), "--forgers", str(p.forgers),
        "--redial-s", str(p.redial_s),
    ]  # fmt: skip
    async with await anyio.open_process(argv, stderr=None) as attacker:
        assert attacker.stdout is not None
        lines = TextReceiveStream(attacker.stdout)
        with anyio.fail_after(120):  # the pool fills; holders past the caps are refused
            first = await lines.receive()
        if first.strip() != "underway":
            raise RuntimeError(f"the attacker said {first!r}")
        async with anyio.create_task_group() as tg:

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss_kb(d.pid))
                    await anyio.sleep(0.05)

            tg.start_soon(sample)
            began = time.monotonic()
            under = await _prompts(viewers, p, "flood")
            connect_under = await _new_viewers(d, p.new_viewers)
            flood_s = time.monotonic() - began
            during = await _metrics(d, token)
            tg.cancel_scope.cancel()
        attacker.terminate()
        rest = ""
        with anyio.fail_after(60):
            async for text in lines:
                rest += text
            await attacker.wait()
    counts = json.loads(rest.strip().splitlines()[-1])
    await _unauthenticated_gone(d, token)
    await anyio.sleep(1.0)
    rss_after = rss_kb(d.pid)
    after = await _prompts(viewers, p, "after")
    up = d.proc.returncode is None and len(after) == p.viewers * p.prompts
    return Measured(
        idle, under, after, connect_idle, connect_under, before, peak, rss_after, flood_s,
        during, counts, up,
    )  # fmt: skip


async def _new_viewers(d: h.Daemon, count: int) -> list[float]:
    """A fresh viewer's connect (token on the upgrade) and first answer, one after another;
    ms each, or inf for one the daemon turned away."""
    out: list[float] = []
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            began = time.perf_counter()
            try:
                with anyio.fail_after(30):
                    async with h.viewer(tg, d) as v:
                        await v.request("session/list")
                out.append((time.perf_counter() - began) * 1000)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, h.RpcFailed):
                out.append(float("inf"))
            await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    return out


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    token = ctx.cp.issuer.mint_viewer_token(h.NODE_ID, ["node"], subject="bench-node")
    agents = {"echo": ["--scenario", "echo"]}
    async with (
        h.daemon(ctx.cp, ctx.scratch("daemon"), agents, DEFAULT_CAPS) as d,
        anyio.create_task_group() as tg,
        AsyncExitStack() as stack,
    ):
        viewers: list[tuple[h.Viewer, str]] = []
        for _ in range(p.viewers):
            v = await stack.enter_async_context(h.viewer(tg, d))
            viewers.append((v, await v.start_session("echo", ctx.scratch("cwd"))))
        m = await _measure(d, viewers, p, token)
        await stack.aclose()
        tg.cancel_scope.cancel()
    return _figures(ctx, p, m)


def _figures(ctx: h.Context, p: Params, m: Measured) -> list[Figure]:
    growth_peak = (m.rss_peak_kb - m.rss_before_kb) / 1024
    growth_kept = (m.rss_after_kb - m.rss_before_kb) / 1024
    refused = sum(
        v for k, v in m.during.items() if k.startswith("vm_agent_connections_refused_total")
    )
    ctx.say(
        f"  prompts p50 idle {percentile(m.idle, 50):.2f} ms, flood "
        f"{percentile(m.under, 50):.2f} ms; RSS +{growth_peak:.1f} MB at peak, "
        f"+{growth_kept:.1f} MB after; up: {m.up}"
    )
    a = m.attack
    turned_away = sum(1 for x in m.connect_under if x == float("inf"))
    ctx.say(
        f"  strangers: {a['dials']} dials, {refused:.0f} refused at accept, "
        f"{m.during.get('vm_agent_connections_evicted_total', 0):.0f} evicted, "
        f"{a['fat_frames']} fat frames (closes {a['fat_closes']}), forged {a['forged']}; "
        f"new viewers turned away: {turned_away} of {len(m.connect_under)}"
    )
    extra = {
        "holders": p.holders,
        "addresses": p.addresses,
        "attack": a,
        "dials_per_s": round(a["dials"] / max(m.flood_s, 1e-9)),
        "refused_at_accept": refused,
        "refused_by_reason": {
            k.split('"')[1]: v
            for k, v in m.during.items()
            if k.startswith("vm_agent_connections_refused_total")
        },
        "evicted": m.during.get("vm_agent_connections_evicted_total", 0.0),
        "new_viewers_turned_away": turned_away,
        "auth_failures": m.during.get("vm_agent_ws_auth_failures_total", 0.0),
        "unauthenticated_during": m.during.get('vm_agent_connections{state="unauthenticated"}'),
        "prompts_after_p50_ms": percentile(m.after, 50),
    }
    how = (
        f"{p.viewers} real viewers x {p.prompts} prompts (echo agent) during {p.holders} held "
        f"sockets from {p.addresses} addresses, {p.pushers} pushers of 4 MiB pre-auth frames, "
        f"{p.forgers} forged-token upgraders; default caps"
    )
    figures = []
    for q, goal in ((50, Goal("<= 2x idle", 2.0, "lower", on_ratio=True)), (99, None)):
        figures.append(
            Figure(
                NAME,
                f"real viewers' prompt latency under a flood, p{q}",
                "ms",
                Summary.of([percentile(m.under, q)]),
                f"the same prompts idle, p{q}",
                Summary.of([percentile(m.idle, q)]),
                (goal,) if goal else (),
                note=how,
                extra=extra if q == 50 else {},
            )
        )
    reached = [x for x in m.connect_under if x != float("inf")] or [float("nan")]
    figures.append(
        Figure(
            NAME,
            "a new viewer's connect and first answer under the flood, p50",
            "ms",
            Summary.of([percentile(reached, 50)]),
            "the same idle, p50",
            Summary.of([percentile(m.connect_idle, 50)]),
            note=f"{len(m.connect_under)} new viewers one after another, token on the "
            f"upgrade; {turned_away} turned away",
            extra={"turned_away": turned_away, "p99_ms": percentile(reached, 99)},
        )
    )
    figures.append(
        Figure(
            NAME,
            "daemon RSS growth during the flood (peak)",
            "MB",
            Summary.of([growth_peak]),
            goals=(Goal("< 64 MB", 64.0, "lower"),),
            note=f"VmRSS sampled every 50 ms; {growth_kept:.1f} MB still held 1 s after the "
            f"flood ended (RSS before {m.rss_before_kb / 1024:.1f} MB)",
            extra={"kept_mb": growth_kept, "before_mb": m.rss_before_kb / 1024},
        )
    )
    figures.append(
        Figure(
            NAME,
            "daemon up after the flood, serving prompts",
            "yes=1",
            Summary.of([1.0 if m.up else 0.0]),
            goals=(Goal("up", 1.0, "higher"),),
        )
    )
    return figures
