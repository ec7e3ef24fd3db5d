"""The cost of dispatch: a task submitted to the control plane, to the agent's first update
seen from the control plane's event stream, on a warm node.

The node is a real `vm-agent serve` with its control link (ready, heartbeats, the outbox
the events come back through); the control plane places the task, its dispatcher starts
the session and sends the prompt over its connection to the node. The baseline, measured
in the same run on the same daemon and fake agent: a viewer that starts a session and
prompts it directly, to the first update it receives.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from benchmarks import harness as h
from benchmarks.stats import Figure, Summary

NAME = "task_dispatch"
SMALL = {"minVcpu": 0.1, "minMemoryGb": 0.1, "minDiskGb": 0.1}


@dataclass(frozen=True)
class Params:
    repeats: int


SCALES = {"smoke": Params(repeats=2), "quick": Params(repeats=6), "full": Params(repeats=15)}


async def follow(http: httpx.AsyncClient, task_id: str, user: dict[str, str]) -> tuple[float, str]:
    """Reads the task's event stream to its end: when its first agent update arrived
    (perf_counter, 0 if none) and the status it ended in."""
    first = 0.0
    event = ""
    async with http.stream(
        "GET", f"/api/tasks/{task_id}/events/stream", headers=user, timeout=None
    ) as answer:
        async for line in answer.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "acp.update" and not first:
                first = time.perf_counter()
            elif line.startswith("data: ") and event == "end":
                return first, str(json.loads(line[len("data: ") :]).get("status"))
    return first, "stream closed"


async def _first_update(http: httpx.AsyncClient, task_id: str, user: dict[str, str]) -> float:
    first, status = await follow(http, task_id, user)
    if status != "completed":
        raise RuntimeError(f"task {task_id} ended {status}")
    if not first:
        raise RuntimeError(f"task {task_id}: no agent update in its stream")
    return first


def node_env(
    cp: h.ControlPlane, root: Path, node_id: str, control_plane_url: str
) -> dict[str, str]:
    """A daemon's settings for its control link: a callback token (0600) and where to call."""
    token_file = root / f"callback-token-{node_id}"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(cp.issuer.mint_callback_token(node_id))
    return {
        "VM_AGENT_NODE_ID": node_id,
        "VM_AGENT_CONTROL_PLANE_URL": control_plane_url,
        "VM_AGENT_CALLBACK_TOKEN_FILE": str(token_file),
    }


async def place_node(
    http: httpx.AsyncClient, admin: dict[str, str], node_id: str, d: h.Daemon, root: Path
) -> None:
    """Where the dispatcher reaches the daemon; returns once the node reported ready."""
    placed = await http.put(
        f"/api/nodes/{node_id}/address",
        json={"viewerUrl": d.url, "workspaceRoot": str(root)},
        headers=admin,
    )
    placed.raise_for_status()
    with anyio.fail_after(60):
        while (  # noqa: ASYNC110 - polling the control plane's record of the node
            not (await http.get(f"/api/nodes/{node_id}", headers=admin)).json().get("ready_at")
        ):
            await anyio.sleep(0.05)


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    root = ctx.scratch("daemon")
    env = node_env(ctx.cp, ctx.root, h.NODE_ID, ctx.cp.url)
    admin = {"Authorization": f"Bearer {ctx.cp.issuer.mint_user_token('bench', admin=True)}"}
    user = {"Authorization": f"Bearer {ctx.cp.issuer.mint_user_token('bench-user')}"}
    dispatched: list[float] = []
    direct: list[float] = []
    async with (
        h.daemon(ctx.cp, root, {"fake": ["--scenario", "echo"]}, env=env) as d,
        httpx.AsyncClient(base_url=ctx.cp.url, timeout=30) as http,
        anyio.create_task_group() as tg,
    ):
        await place_node(http, admin, h.NODE_ID, d, ctx.root)
        for i in range(p.repeats + 1):  # the first warms the dispatcher's connection
            body = {"taskId": f"bench-{i}", "agent": "fake", "prompt": "hello",
                    "requirements": SMALL}  # fmt: skip
            start = time.perf_counter()
            submitted = await http.post("/api/tasks", json=body, headers=user)
            submitted.raise_for_status()
            first = await _first_update(http, f"bench-{i}", user)
            if i:
                dispatched.append((first - start) * 1000)
            ctx.say(f"task {i}: {(first - start) * 1000:.0f} ms")
        cwd = ctx.scratch("cwd")
        seen = anyio.Event()

        def hook(got: h.Received) -> None:
            if got.type == "acp.update":
                seen.set()

        async with h.viewer(tg, d) as v:
            v.on_event = hook
            for i in range(p.repeats):
                seen = anyio.Event()
                start = time.perf_counter()
                sid = await v.start_session("fake", cwd)
                await v.subscribe(sid)
                async with anyio.create_task_group() as turn:  # the turn ends before the next
                    turn.start_soon(v.prompt, sid, "hello", h.prompt_id(f"direct-{i}"))
                    with anyio.fail_after(60):
                        await seen.wait()
                    direct.append((time.perf_counter() - start) * 1000)
        tg.cancel_scope.cancel()
    return [
        Figure(
            benchmark=NAME,
            name="task submitted to the control plane to the agent's first update in its "
            "event stream (warm node, fake agent)",
            unit="ms",
            value=Summary.of(dispatched),
            baseline_name="a viewer starting the same session and prompt on the daemon directly",
            baseline=Summary.of(direct),
            note="the ratio is the cost of dispatch: placement, the dispatcher's steps, the "
            "outbox bringing the update back",
        )
    ]
