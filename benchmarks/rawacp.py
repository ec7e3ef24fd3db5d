"""Baselines over the agent's stdio: a bare line reader, and the `acp` package's client.

`RawAgent` is the raw limit: blocking reads of the agent's stdout, `json.loads` of each line
and nothing else. `acp_flood` receives the same flood through the `agent-client-protocol`
package's `ClientSideConnection` (which validates every message with pydantic models).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio

from benchmarks.harness import fake_agent_command

_READ = 1 << 16
LineHook = Callable[[dict[str, Any]], None]


class RawAgent:
    """The fake agent as a child process, driven with hand-written JSON lines."""

    def __init__(self, args: Sequence[str], *, command: Sequence[str] | None = None) -> None:
        """`args` are the fake agent's flags; `command` runs another agent instead."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_AGENT_")}
        self.proc = subprocess.Popen(
            list(command) if command is not None else fake_agent_command(*args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._out = self.proc.stdout.fileno()
        self._in = self.proc.stdin
        self._pending: list[bytes] = []
        self._partial = b""
        self._next_id = 0

    def __enter__(self) -> RawAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        with contextlib.suppress(OSError):
            self._in.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def send(self, message: dict[str, Any]) -> None:
        self._in.write(json.dumps(message).encode() + b"\n")
        self._in.flush()

    def lines(self) -> Iterator[bytes]:
        """Complete lines from stdout until EOF."""
        while True:
            while self._pending:
                yield self._pending.pop(0)
            data = os.read(self._out, _READ)
            if not data:
                return
            parts = (self._partial + data).split(b"\n")
            self._partial = parts.pop()
            self._pending = parts

    def request(self, method: str, params: dict[str, Any], on_line: LineHook | None = None) -> Any:
        """Sends a request; every other message before its answer goes to `on_line`."""
        self._next_id += 1
        rid = self._next_id
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        for line in self.lines():
            msg = json.loads(line)
            if msg.get("id") == rid and "method" not in msg:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result")
            if on_line is not None:
                on_line(msg)
        raise EOFError(f"the agent closed stdout before answering {method}")

    def start(self, cwd: Path) -> str:
        self.request("initialize", {"protocolVersion": 1, "clientCapabilities": {}})
        result = self.request("session/new", {"cwd": str(cwd), "mcpServers": []})
        return str(result["sessionId"])

    def prompt_params(self, session_id: str, text: str) -> dict[str, Any]:
        return {"sessionId": session_id, "prompt": [{"type": "text", "text": text}]}


def raw_flood(args: Sequence[str], cwd: Path, count: int) -> float:
    """Seconds from sending the prompt until the reader parsed the `count`-th update."""
    with RawAgent(args) as agent:
        session_id = agent.start(cwd)
        agent._next_id += 1
        rid = agent._next_id
        start = time.perf_counter()
        agent.send(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "session/prompt",
                "params": agent.prompt_params(session_id, "go"),
            }
        )
        seen = 0
        took = None
        for line in agent.lines():
            msg = json.loads(line)
            if msg.get("method") == "session/update":
                seen += 1
                if seen == count:
                    took = time.perf_counter() - start
            elif msg.get("id") == rid:
                break
        if took is None:
            raise RuntimeError(f"raw reader saw {seen} of {count} updates")
        return took


class _CountingClient:
    """An `acp` Client whose only job is counting session/update notifications."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.done = anyio.Event()
        self.at = 0.0

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.seen += 1
        if self.seen == self.count:
            self.at = time.perf_counter()
            self.done.set()

    def on_connect(self, conn: Any) -> None:
        pass


async def acp_flood(args: Sequence[str], cwd: Path, count: int) -> float:
    """The same flood through `acp.spawn_agent_process` (asyncio only)."""
    import acp
    from acp.helpers import text_block

    client = _CountingClient(count)
    command = fake_agent_command(*args)
    client_any: Any = client  # implements the parts of acp.Client a flood uses
    async with acp.spawn_agent_process(client_any, command[0], *command[1:]) as (conn, _proc):
        await conn.initialize(protocol_version=1)
        session = await conn.new_session(cwd=str(cwd), mcp_servers=[])
        start = time.perf_counter()
        await conn.prompt(session_id=session.session_id, prompt=[text_block("go")])
        with anyio.fail_after(60):
            await client.done.wait()
        return client.at - start


def raw_start_and_load(args: Sequence[str], cwd: Path, session_id: str) -> float:
    """Seconds to spawn the agent, initialize it and have `session/load` answered."""
    start = time.perf_counter()
    with RawAgent(args) as agent:
        agent.request("initialize", {"protocolVersion": 1, "clientCapabilities": {}})
        agent.request("session/load", {"sessionId": session_id, "cwd": str(cwd), "mcpServers": []})
        return time.perf_counter() - start
