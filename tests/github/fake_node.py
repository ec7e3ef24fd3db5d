"""A node's viewer API on loopback, for the dispatcher's side of a task's repository until
the daemon's half (clone, `workspace/push`) lands: `/v1/ws`, JSON-RPC 2.0 in text frames,
the methods the dispatcher calls, answered as docs/viewer-api.md says, every call recorded.

`workspace/push` is real by default: the node asks the control plane for a `write` token
(its callback token, the git-token call), clones the task's repository from the GitHub
stand-in, commits on the task branch as the task's author and pushes that branch alone.
It answers the same for a session's second push (the contract's idempotence)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.github.conftest import git

INVALID_PARAMS, UNKNOWN_SESSION = -32602, -32002


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Push = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class FakeNode:
    node_id: str
    work: Path
    control_plane: str = ""  # its base URL, for the git-token call
    callback_token: str = ""
    url: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    pushes: dict[str, dict[str, Any]] = field(default_factory=dict)  # session: its answer
    push: Push | None = None  # instead of the real push (a refusal, nothing to push)
    cancelled: set[str] = field(default_factory=set)

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        sid = params.get("session_id")
        if method == "session/start":
            if sid in self.sessions:
                raise RpcError(-32600, f"session {sid} exists")
            self.sessions[str(sid)] = {**params, "state": "idle"}
            return {"session_id": sid, "state": "idle", "agent": params.get("agent")}
        if method == "session/list":
            listed = [{"session_id": k, "state": v["state"]} for k, v in self.sessions.items()]
            return {"sessions": listed}
        if sid not in self.sessions:
            raise RpcError(UNKNOWN_SESSION, f"unknown session {sid}")
        session = self.sessions[str(sid)]
        if method == "session/prompt":
            return {
                "prompt_id": params["prompt_id"],
                "outcome": "completed",
                "stop_reason": "end_turn",
            }
        if method == "session/cancel":
            self.cancelled.add(str(sid))
            return {}
        if method == "session/stop":
            session["state"] = "stopped"
            return {"session_id": sid, "state": "stopped"}
        if method == "workspace/push":
            if session.get("repository") is None:
                raise RpcError(INVALID_PARAMS, "the session has no repository")
            if str(sid) not in self.pushes:
                push = self.push or self.real_push
                self.pushes[str(sid)] = await push(session)
            return self.pushes[str(sid)]
        raise RpcError(-32601, f"method not found: {method}")

    async def real_push(self, session: dict[str, Any]) -> dict[str, Any]:
        repo = session["repository"]
        async with httpx.AsyncClient(base_url=self.control_plane, timeout=20) as client:
            r = await client.post(
                f"/api/nodes/{self.node_id}/workspaces/{repo['workspace_id']}/git-token",
                json={"access": "write"},
                headers={"Authorization": f"Bearer {self.callback_token}"},
            )
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        url = repo["url"].replace("http://", f"http://x-access-token:{token}@", 1)
        clone = self.work / str(session["session_id"])
        await git("clone", "-q", url, str(clone), cwd=self.work)
        base = repo["base_branch"]
        if base is None:
            base = (await git("rev-parse", "--abbrev-ref", "HEAD", cwd=clone)).stdout.strip()
        await git("checkout", "-q", "-b", repo["task_branch"], f"origin/{base}", cwd=clone)
        (clone / "agent.txt").write_text("the agent's work\n")
        author = repo["author"]
        await git("add", "agent.txt", cwd=clone)
        await git(
            "-c", f"user.name={author['name']}", "-c", f"user.email={author['email']}",
            "commit", "-q", "-m", "the agent's work", cwd=clone,
        )  # fmt: skip
        head = (await git("rev-parse", "HEAD", cwd=clone)).stdout.strip()
        await git("push", "-q", "origin", f"HEAD:refs/heads/{repo['task_branch']}", cwd=clone)
        return {
            "branch": repo["task_branch"],
            "base_branch": base,
            "head_commit": head,
            "pushed": True,
        }

    async def serve_one(self, ws: ServerConnection) -> None:
        try:
            async for frame in ws:
                msg = json.loads(frame)
                answer: dict[str, Any] = {"jsonrpc": "2.0", "id": msg.get("id")}
                try:
                    answer["result"] = await self.handle(msg["method"], msg.get("params") or {})
                except RpcError as exc:
                    answer["error"] = {"code": exc.code, "message": exc.message}
                if "id" in msg:
                    await ws.send(json.dumps(answer))
        except ConnectionClosed:
            pass  # a control plane killed mid-call: its successor connects again


@asynccontextmanager
async def fake_node(node_id: str, work: Path) -> AsyncIterator[FakeNode]:
    """The node, listening on 127.0.0.1 (plain ws://, loopback) until the block exits."""
    work.mkdir(parents=True, exist_ok=True)
    node = FakeNode(node_id, work)
    async with serve(node.serve_one, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        node.url = f"ws://127.0.0.1:{port}/v1/ws"
        yield node
        server.close()
        with anyio.move_on_after(5):
            await server.wait_closed()
