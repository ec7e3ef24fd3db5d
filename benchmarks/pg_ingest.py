"""PostgreSQL ingest: events a second that the control plane stores from N simulated nodes
posting outbox-sized batches at once, each event exactly once (checked).

The control plane runs as its own process (`python -m control_plane serve`) on a fresh
schema of the PostgreSQL server that VM_AGENT_TEST_POSTGRES_URL names (`.ci/postgres
start` prints it). Each node posts its batches one after another, as the daemon's outbox
does, and posts one of them twice (a lost acknowledgement), so every run also exercises
the exactly-once path; the count is of distinct events stored. Baseline, in the same run:
the same rows inserted bare through the same driver (psycopg 3, `executemany` on N
connections at once, one transaction a batch) into a table of the same shape.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import orjson
import psycopg
from psycopg.types.json import Jsonb

from benchmarks import harness as h
from benchmarks import procstat
from benchmarks.pg_server import postgres_url, schema_of_its_own
from benchmarks.stats import Figure, Summary
from control_plane.plane import ControlPlane
from control_plane.settings import ControlPlaneSettings

NAME = "pg_ingest"
PUBLIC_URL = "http://bench-control-plane"
# ~200 bytes of data per event, like an agent_message_chunk.
UPDATE = {
    "sessionId": "acp-0123456789",
    "update": {
        "sessionUpdate": "agent_message_chunk",
        "content": {"type": "text", "text": "lorem ipsum dolor sit amet " * 3},
    },
}


@dataclass(frozen=True)
class Params:
    nodes: int
    batches: int  # per node
    batch: int  # events per batch (the outbox sends up to 500)
    repeats: int


SCALES = {
    "smoke": Params(nodes=2, batches=2, batch=50, repeats=1),
    "quick": Params(nodes=8, batches=8, batch=500, repeats=2),
    "full": Params(nodes=16, batches=16, batch=500, repeats=3),
}


def _events(first_seq: int, count: int) -> list[dict[str, object]]:
    return [
        {"session_id": "s-1", "seq": seq, "ts": 1.0, "type": "acp.update", "data": UPDATE}
        for seq in range(first_seq, first_seq + count)
    ]


@contextlib.contextmanager
def _control_plane(url: str, state_dir: Path) -> Iterator[tuple[str, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROL_PLANE_")}
    env |= {"CONTROL_PLANE_DATABASE_URL": url, "CONTROL_PLANE_PUBLIC_URL": PUBLIC_URL}
    argv = [sys.executable, "-m", "control_plane", "--state-dir", str(state_dir)]
    proc = subprocess.Popen(
        [*argv, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"the control plane did not start: {line!r}")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _ingest(base: str, tokens: dict[str, str], p: Params) -> tuple[float, int, int]:
    """Every node posts its batches in turn, the first one twice; returns (seconds, stored,
    duplicates) as the control plane answered."""
    bodies = [orjson.dumps({"events": _events(1 + b * p.batch, p.batch)}) for b in range(p.batches)]
    stored = duplicates = 0
    limits = httpx.Limits(max_connections=p.nodes, max_keepalive_connections=p.nodes)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def node(node_id: str, token: str) -> None:
            nonlocal stored, duplicates
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for body in [bodies[0], *bodies]:
                r = await client.post(f"/api/nodes/{node_id}/events", content=body, headers=headers)
                r.raise_for_status()
                answer = r.json()
                stored += answer["stored"]
                duplicates += answer["duplicates"]

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for node_id, token in tokens.items():
                tg.start_soon(node, node_id, token)
        took = time.perf_counter() - start
    return took, stored, duplicates


def _check_exactly_once(url: str, prefix: str, expected: int) -> None:
    with psycopg.connect(url) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (node_id, session_id, seq)) FROM node_events"
            " WHERE node_id LIKE %s",
            (f"{prefix}%",),
        ).fetchone() or (0, 0)
    if (total, distinct) != (expected, expected):
        raise RuntimeError(f"stored {total} rows, {distinct} distinct, of {expected} events")


def _bare(url: str, prefix: str, p: Params) -> float:
    """The same rows, bare INSERTs through psycopg on `nodes` connections at once."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bare_events (LIKE node_events INCLUDING ALL)")
    insert = (
        "INSERT INTO bare_events (node_id, session_id, seq, ts, type, data, received_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
    )

    def node(i: int) -> None:
        node_id = f"{prefix}{i}"
        with psycopg.connect(url) as conn:
            for b in range(p.batches):
                rows = [
                    (node_id, e["session_id"], e["seq"], e["ts"], e["type"], Jsonb(e["data"]), 0.0)
                    for e in _events(1 + b * p.batch, p.batch)
                ]
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(insert, rows)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=p.nodes) as pool:
        list(pool.map(node, range(p.nodes)))
    return time.perf_counter() - start


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    events = p.nodes * p.batches * p.batch
    rates: list[float] = []
    bare: list[float] = []
    cpu: list[float] = []
    with (
        postgres_url() as server,
        schema_of_its_own(server) as url,
        _control_plane(url, ctx.scratch("cp")) as (base, pid),
    ):
        minter_settings = ControlPlaneSettings(
            state_dir=ctx.scratch("minter"), public_url=PUBLIC_URL, database_url=url
        )
        minter = ControlPlane.open(minter_settings)
        try:
            for r in range(p.repeats):
                prefix = f"r{r}-n"
                tokens = {
                    f"{prefix}{i}": minter.tokens.mint_callback_token(f"{prefix}{i}")
                    for i in range(p.nodes)
                }
                cpu0, wall0 = procstat.cpu_seconds(pid), time.monotonic()
                took, stored, duplicates = await _ingest(base, tokens, p)
                cpu.append((procstat.cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0))
                if (stored, duplicates) != (events, p.nodes * p.batch):
                    raise RuntimeError(f"answers said {stored} stored, {duplicates} duplicates")
                await anyio.to_thread.run_sync(_check_exactly_once, url, prefix, events)
                rates.append(events / took)
                bare_took = await anyio.to_thread.run_sync(_bare, url, f"bare{r}-n", p)
                bare.append(events / bare_took)
                ctx.say(
                    f"  {p.nodes} nodes x {p.batches} batches of {p.batch}: "
                    f"{rates[-1]:,.0f} events/s (bare inserts {bare[-1]:,.0f}/s)"
                )
        finally:
            minter.close()
    cpu.sort()
    return [
        Figure(
            benchmark=NAME,
            name=f"events stored into PostgreSQL, {p.nodes} nodes posting batches of {p.batch}",
            unit="events/s",
            value=Summary.of(rates),
            baseline_name="bare psycopg inserts, same rows, same concurrency",
            baseline=Summary.of(bare),
            note=(
                "each event stored exactly once (checked; each node posts one batch twice); "
                f"control plane process CPU {cpu[len(cpu) // 2]:.0%} of one core"
            ),
            extra={"nodes": p.nodes, "batches": p.batches, "batch": p.batch, "events": events},
        )
    ]
