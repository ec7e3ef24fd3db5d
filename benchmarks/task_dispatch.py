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


async def _first_update(http: httpx.AsyncClient, task_id: str, user: dict[str, str]) -> float:
    """Reads the task's event stream; when its first agent update arrived (perf_counter)."""
    first = 0.0
    async with http.stream(
        "GET", f"/api/tasks/{task_id}/events/stream", headers=user, timeout=None
    ) as answer:
        event = ""
        async for line in answer.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "acp.update" and not first:
                first = time.perf_counter()
            elif line.startswith("data: ") and event == "end":
                status = json.loads(line[len("data: ") :]).get("status")
                if status != "completed":
                    raise RuntimeError(f"task {task_id} ended {status}")
                break
    if not first:
        raise RuntimeError(f"task {task_id}: no agent update in its stream")
    return first


async def run(ctx: h.Context) -> list[Figure]:
    p = SCALES[ctx.scale]
    root = ctx.scratch("daemon")
    token_file = ctx.root / "callback-token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(ctx.cp.issuer.mint_callback_token(h.NODE_ID))
    env = {
        "VM_AGENT_CONTROL_PLANE_URL": ctx.cp.url,
        "VM_AGENT_CALLBACK_TOKEN_FILE": str(token_file),
    }
    admin = {"Authorization": f"Bearer {ctx.cp.issuer.mint_user_token('bench', admin=True)}"}
    user = {"Authorization": f"Bearer {ctx.cp.issuer.mint_user_token('bench-user')}"}
    dispatched: list[float] = []
    direct: list[float] = []
    async with (
        h.daemon(ctx.cp, root, {"fake": ["--scenario", "echo"]}, env=env) as d,
        httpx.AsyncClient(base_url=ctx.cp.url, timeout=30) as http,
        anyio.create_task_group() as tg,
    ):
        placed = await http.put(
            f"/api/nodes/{h.NODE_ID}/address",
            json={"viewerUrl": d.url, "workspaceRoot": str(ctx.root)},
            headers=admin,
        )
        placed.raise_for_status()
        with anyio.fail_after(60):
            while (  # noqa: ASYNC110 - polling the control plane's record of the node
                not (await http.get(f"/api/nodes/{h.NODE_ID}", headers=admin))
                .json()
                .get("ready_at")
            ):
                await anyio.sleep(0.05)
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
