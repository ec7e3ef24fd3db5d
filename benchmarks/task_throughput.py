"""Tasks dispatched per second through two control-plane replicas on one PostgreSQL, to
several `vm-agent serve` daemons on loopback, with the spread of submission to first update.

Each replica has its own engine, dispatcher and lease holder (two apps served in this
process, the way two processes would share the database); tasks are submitted to both,
half each, all at once, and each is followed on the replica it was submitted to until it
ends. A throughput has no same-run baseline here; task_dispatch holds the one-task ratio.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from benchmarks import harness as h
from benchmarks.pg_server import postgres_url, schema_of_its_own
from benchmarks.stats import Figure, Summary
from benchmarks.task_dispatch import follow, node_env, place_node
from control_plane.app import create_app, plane_of_app, serve_control_plane
from control_plane.settings import ControlPlaneSettings

NAME = "task_throughput"
PUBLIC_URL = "http://bench-replicas"
SMALL = {"minVcpu": 0.1, "minMemoryGb": 0.1, "minDiskGb": 0.1, "maxCoTenants": 16}


@dataclass(frozen=True)
class Params:
    nodes: int
    tasks: int


SCALES = {
    "smoke": Params(nodes=2, tasks=4),
    "quick": Params(nodes=3, tasks=24),
    "full": Params(nodes=4, tasks=60),
}


@contextlib.asynccontextmanager
async def _replicas(
    database_url: str, root: Path
) -> AsyncIterator[tuple[list[str], h.ControlPlane]]:
    urls: list[str] = []
    planes = []
    async with contextlib.AsyncExitStack() as stack:
        for name in ("a", "b"):
            settings = ControlPlaneSettings(
                state_dir=root / f"replica-{name}",
                public_url=PUBLIC_URL,
                database_url=database_url,
                key_activation_delay_s=0,
            )
            app = create_app(settings)
            stack.callback(plane_of_app(app).close)
            urls.append(await stack.enter_async_context(serve_control_plane(settings, app=app)))
            planes.append(plane_of_app(app))
        yield urls, h.ControlPlane(urls[0], planes[0].tokens)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    with postgres_url() as server, schema_of_its_own(server) as database_url:
        async with _replicas(database_url, ctx.root) as (urls, cp):
            return await _measure(ctx, p, urls, cp)


async def _measure(ctx: h.Context, p: Params, urls: list[str], cp: h.ControlPlane) -> list[Figure]:
    admin = {"Authorization": f"Bearer {cp.issuer.mint_user_token('bench', admin=True)}"}
    user = {"Authorization": f"Bearer {cp.issuer.mint_user_token('bench-user')}"}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=None))
            for u in urls
        ]
        for i in range(p.nodes):
            node = f"bench-node-{i}"
            env = node_env(cp, ctx.root, node, urls[i % 2])
            d = await stack.enter_async_context(
                h.daemon(cp, ctx.scratch(f"daemon-{i}"), {"fake": ["--scenario", "echo"]}, env)
            )
            await place_node(clients[0], admin, node, d, ctx.root)
        latency: list[float] = []
        ended: list[str] = []

        async def one(i: int) -> None:
            http = clients[i % 2]
            body = {"taskId": f"tp-{i}", "agent": "fake", "prompt": "hello", "requirements": SMALL}
            start = time.perf_counter()
            (await http.post("/api/tasks", json=body, headers=user)).raise_for_status()
            first, status = await follow(http, f"tp-{i}", user)
            ended.append(status)
            if first:
                latency.append((first - start) * 1000)

        begin = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(p.tasks):
                tg.start_soon(one, i)
        wall = time.perf_counter() - begin
    done = ended.count("completed")
    ctx.say(f"{done}/{p.tasks} completed in {wall:.1f} s")
    return [
        Figure(
            benchmark=NAME,
            name=f"tasks through two replicas on PostgreSQL to {p.nodes} daemons, "
            f"{p.tasks} submitted at once",
            unit="tasks/s",
            value=Summary.of([done / wall]),
            note=f"{done} of {p.tasks} completed; submission to first update p50 "
            f"{Summary.of(latency).median:.0f} ms, p99 {_p99(latency):.0f} ms"
            if latency
            else "no task produced an update",
            extra={"first_update_ms": sorted(latency), "ended": ended},
        ),
        Figure(
            benchmark=NAME,
            name="submission to the agent's first update, under that load",
            unit="ms",
            value=Summary.of(latency or [0.0]),
        ),
    ]
