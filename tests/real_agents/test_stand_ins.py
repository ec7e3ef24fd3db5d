"""The model stand-ins and the loopback-only namespace, without any real agent.

Each stand-in is checked the way its agent reads it: the events of a streamed answer in
order, a tool call's arguments whole, a held answer that stays open until released or
until the client goes, every request recorded. One runs as its own process, as the
VM test will run it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.capabilities import require_netns
from tests.processes import child_process, stopped_by
from tests.real_agents import anthropic_api, gemini_api, openai_api
from tests.real_agents.agents import JAIL, REPO
from tests.real_agents.model_api import RATE_LIMITED, Failure, Reply, Script, ToolCall, serve

pytestmark = pytest.mark.anyio

TOOL = ToolCall("Bash", {"command": "echo hi", "description": "say hi"})


@asynccontextmanager
async def client_for(app_factory: Any, script: Script) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(app_factory(script), script, host="127.0.0.1") as served,
        httpx.AsyncClient(base_url=str(served.url), timeout=30) as client,
    ):
        yield client


def sse_events(body: str) -> list[tuple[str | None, dict[str, Any]]]:
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
        if data is not None:
            events.append((name, data))
    return events


ANTHROPIC_TURN = {
    "model": "claude-x",
    "stream": True,
    "max_tokens": 100,
    "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
    "messages": [{"role": "user", "content": "hi"}],
}


async def test_anthropic_streams_text_then_a_tool_call_and_records_the_request() -> None:
    script = Script([Reply(text="Let me run it.", tool=TOOL)])
    async with client_for(anthropic_api.app, script) as client:
        r = await client.post("/v1/messages", json=ANTHROPIC_TURN, headers={"x-api-key": "k"})
        side = await client.post("/v1/messages", json={**ANTHROPIC_TURN, "stream": False})
    events = sse_events(r.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    text = "".join(d["delta"]["text"] for n, d in events if d.get("delta", {}).get("text"))
    assert text == "Let me run it."
    tool_start = events[6][1]["content_block"]
    assert (tool_start["type"], tool_start["name"]) == ("tool_use", "Bash")
    assert json.loads(events[7][1]["delta"]["partial_json"]) == TOOL.arguments
    assert events[9][1]["delta"]["stop_reason"] == "tool_use"
    # a request without streaming is a side call: the default, as one JSON message
    assert side.json()["content"] == [{"type": "text", "text": script.default.text}]
    turn, other = script.requests
    assert (turn.turn, other.turn) == (True, False)
    assert turn.headers["x-api-key"] == "k" and turn.body["messages"][0]["content"] == "hi"


async def test_openai_streams_a_function_call_with_its_arguments() -> None:
    script = Script([Reply(tool=ToolCall("exec_command", {"cmd": "ls"})), Reply(text="ok")])
    async with client_for(openai_api.app, script) as client:
        first = sse_events((await client.post("/v1/responses", json={"input": []})).text)
        second = sse_events((await client.post("/v1/responses", json={"input": []})).text)
    kinds = [d["type"] for _, d in first]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    call = first[2][1]["item"]
    assert (call["type"], call["name"], json.loads(call["arguments"])) == (
        "function_call",
        "exec_command",
        {"cmd": "ls"},
    )
    assert "".join(d.get("delta", "") for _, d in second) == "ok"
    assert second[-1][1]["response"]["usage"]["total_tokens"] > 0


async def test_gemini_streams_chunks_and_answers_side_calls() -> None:
    script = Script([Reply(text="abcdef", tool=ToolCall("write_file", {"file_path": "/x"}))])
    path = "/v1beta/models/gemini-x"
    async with client_for(gemini_api.app, script) as client:
        streamed = await client.post(f"{path}:streamGenerateContent?alt=sse", json={})
        routed = await client.post(f"{path}:generateContent", json={})
        counted = await client.post(f"{path}:countTokens", json={})
    chunks = [data for _, data in sse_events(streamed.text)]
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert "".join(p.get("text", "") for p in parts) == "abcdef"
    assert parts[-1] == {"functionCall": {"name": "write_file", "args": {"file_path": "/x"}}}
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    side = json.loads(routed.json()["candidates"][0]["content"]["parts"][0]["text"])
    assert side["model_choice"] == "pro" and side["next_speaker"] == "user"
    assert counted.json()["totalTokens"] > 0
    assert [r.turn for r in script.requests] == [True, False, False]


@pytest.mark.parametrize(
    ("app_factory", "path", "body", "error"),
    [
        (
            anthropic_api.app,
            "/v1/messages",
            ANTHROPIC_TURN,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
        (openai_api.app, "/v1/responses", {"input": []}, None),
        (gemini_api.app, "/v1beta/models/g:streamGenerateContent", {}, None),
    ],
)
async def test_a_provider_refusal_then_an_answer(
    app_factory: Any, path: str, body: dict[str, Any], error: dict[str, Any] | None
) -> None:
    script = Script([Reply(fail=Failure(529)), Reply(fail=RATE_LIMITED), Reply(text="ok")])
    async with client_for(app_factory, script) as client:
        overloaded = await client.post(path, json=body)
        limited = await client.post(path, json=body)
        answered = await client.post(path, json=body)
    assert overloaded.status_code == 529
    if error is not None:
        assert overloaded.json() == error
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    assert answered.status_code == 200 and "ok" in answered.text
    assert len(script.turns()) == 3


async def test_a_held_answer_waits_for_its_release_and_knows_when_the_client_left() -> None:
    script = Script([Reply(text="one two three", hold=True), Reply(text="x", hold=True)])
    async with client_for(anthropic_api.app, script) as client:
        async with client.stream("POST", "/v1/messages", json=ANTHROPIC_TURN) as r:
            lines = r.aiter_lines()
            seen: list[str] = []
            while not any("text_delta" in line for line in seen):
                seen.append(await lines.__anext__())
            await anyio.wait_all_tasks_blocked()
            assert not any("message_stop" in line for line in seen)  # held open
            script.release()
            rest = [line async for line in lines]
        assert any("message_stop" in line for line in rest)
        assert not script.requests[0].aborted
        # the second is released already; a client that goes away mid-stream is noted
    script2 = Script([Reply(text="one two three", hold=True)])
    async with client_for(anthropic_api.app, script2) as client:
        async with client.stream("POST", "/v1/messages", json=ANTHROPIC_TURN) as r:
            async for line in r.aiter_lines():
                if "text_delta" in line:
                    break
        with anyio.fail_after(30):
            while not script2.requests[0].aborted:
                await anyio.sleep(0.02)


async def test_the_stand_in_serves_loopback_only() -> None:
    script = Script()
    with pytest.raises(ValueError, match="loopback"):
        async with serve(anthropic_api.app(script), script, host="0.0.0.0"):
            pass


async def test_the_anthropic_stand_in_as_its_own_process(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps([{"text": "scripted hello"}]))
    record = tmp_path / "requests.jsonl"
    argv = [sys.executable, "-m", "tests.real_agents.anthropic_api", "--port", "0"]
    argv += ["--script", str(replies), "--record", str(record)]
    async with child_process(argv, cwd=REPO) as process:
        assert process.stdout is not None
        with anyio.fail_after(60):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive(1)
        url = line.decode().split()[-1]
        assert line.startswith(b"listening on http://127.0.0.1:")
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(f"{url}/v1/messages", json=ANTHROPIC_TURN)
        assert "scripted hello" in "".join(
            d["delta"].get("text", "") for _, d in sse_events(r.text) if "delta" in d
        )
        (recorded,) = [json.loads(x) for x in record.read_text().splitlines()]
        assert recorded["turn"] is True and recorded["body"]["model"] == "claude-x"
        assert await stopped_by(process, signal.SIGTERM) == 0


def _jail(*command: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    # Asked before the real run, so that the run's own failure is always a failure.
    unshare = require_netns()
    argv = [unshare, "--net", "--map-root-user", "--", sys.executable, str(JAIL), *command]
    # its own process group, as the daemon starts agents: the forwarder lives as long as it
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,
        **kw,
    )


@pytest.mark.integration
async def test_the_namespace_has_only_loopback_and_forwards_the_model(tmp_path: Path) -> None:
    script = Script([Reply(text="through the forward")])
    with tempfile.TemporaryDirectory(prefix="ra-") as short:
        sock = Path(short) / "m.sock"
        async with serve(anthropic_api.app(script), script, uds=sock):
            probe = (
                "import socket, urllib.request, json\n"
                "names = [n for _, n in socket.if_nameindex()]\n"
                # No route leads anywhere but loopback (the table's header line only), so
                # nothing can leave; nothing is sent to find out.
                "out = open('/proc/net/route').read().splitlines()[1:]\n"
                "body = json.dumps({'stream': False, 'messages': []}).encode()\n"
                "r = urllib.request.urlopen('http://127.0.0.1:18765/v1/messages', body)\n"
                "print(json.dumps([names, out, json.load(r)['content'][0]['text']]))\n"
            )
            done = await anyio.to_thread.run_sync(
                lambda: _jail("--forward", f"18765={sock}", "--", sys.executable, "-c", probe)
            )
    assert done.returncode == 0, done.stderr
    names, outside, text = json.loads(done.stdout)
    assert names == ["lo"]
    assert outside == []  # no IPv4 route at all: lo carries 127/8 by its local table
    assert text == script.default.text  # the stand-in, through the namespace's loopback


@pytest.mark.integration
def test_the_namespace_refuses_to_run_outside_one() -> None:
    done = subprocess.run(
        [sys.executable, str(JAIL), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unshare --net" in done.stderr
