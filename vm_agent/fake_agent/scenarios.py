"""Per-scenario prompt behaviour. Each returns a stop reason, or never returns."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Awaitable, Callable

import anyio

from vm_agent.fake_agent.commit import commit
from vm_agent.fake_agent.hostile import hostile
from vm_agent.fake_agent.provider import provider_error, tool_then_provider_error
from vm_agent.fake_agent.tools import tools
from vm_agent.fake_agent.transcript import AGENT
from vm_agent.fake_agent.turn import CANCELLED, END_TURN, Turn, split_text
from vm_agent.fake_agent.wire import RpcError, encode, log, write_all

PromptBehaviour = Callable[[Turn, str], Awaitable[str]]

IGNORE_CANCEL_LIMIT_S = 600.0
FLOOD_BATCH_BYTES = 256 * 1024
GARBAGE_LINES: tuple[bytes, ...] = (
    b"this is not json (a shell profile would print this)\n",
    b'{"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": \n',
    b'[1, 2, "a JSON array, not an object"]\n',
    b'"a JSON string, not an object"\n',
)
_HUGE_PATTERN = "0123456789abcdef"


async def echo(turn: Turn, text: str) -> str:
    return await turn.stream(split_text(text, turn.config.chunks))


async def crash_mid_prompt(turn: Turn, text: str) -> str:
    return await _crash(turn, text, sigkill=False)


async def sigkill_mid_prompt(turn: Turn, text: str) -> str:
    return await _crash(turn, text, sigkill=True)


async def _crash(turn: Turn, text: str, *, sigkill: bool) -> str:
    if not turn.may_crash("crash-prompt"):
        return await echo(turn, text)
    config = turn.config
    how = "SIGKILL" if sigkill else f"exit code {config.exit_code}"
    log(f"fake-agent: crashing mid-prompt after {config.after_chunks} chunks ({how})")
    pieces = split_text(text, max(config.chunks, config.after_chunks))
    delay = config.delay_ms / 1000
    for index, piece in enumerate(pieces[: config.after_chunks]):
        if index and delay:
            await anyio.sleep(delay)  # a crashing agent does not heed a cancel
        turn.chunk(piece)
    turn.crash(sigkill=sigkill)


async def hang(turn: Turn, text: str) -> str:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def ignore_cancel(turn: Turn, text: str) -> str:
    delay = max(turn.config.delay_ms / 1000, 0.001)
    with anyio.move_on_after(IGNORE_CANCEL_LIMIT_S):
        index = 0
        while True:
            turn.chunk(f"still working {index}\n")
            index += 1
            await anyio.sleep(delay)
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def close_stdout(turn: Turn, text: str) -> str:
    turn.chunk(text)
    turn.peer.close_stdout()
    log("fake-agent: closed stdout, still running")
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def garbage_lines(turn: Turn, text: str) -> str:
    pieces = split_text(text, turn.config.chunks)
    for index, piece in enumerate(pieces):
        if index < len(GARBAGE_LINES):
            turn.peer.write_raw(GARBAGE_LINES[index])
        if await turn.pause(turn.config.delay_ms / 1000 if index else 0):
            return CANCELLED
        turn.chunk(piece)
    for line in GARBAGE_LINES[len(pieces) :]:
        turn.peer.write_raw(line)
    return END_TURN


async def huge_line(turn: Turn, text: str) -> str:
    size = int(turn.config.line_mb * 1024 * 1024)
    repeats = size // len(_HUGE_PATTERN) + 1
    turn.chunk((_HUGE_PATTERN * repeats)[:size])
    return END_TURN


async def stderr_flood(turn: Turn, text: str) -> str:
    # Blocking writes on purpose: a client that does not drain stderr stalls us here.
    line = b"fake-agent: stderr flood " + b"." * 998 + b"\n"
    remaining = turn.config.stderr_bytes
    with contextlib.suppress(OSError):  # nobody reads stderr any more: just go on
        while remaining > 0:
            part = line[:remaining] if remaining < len(line) else line
            write_all(2, part)
            remaining -= len(part)
    return await echo(turn, text)


async def env(turn: Turn, text: str) -> str:
    turn.chunk(json.dumps(dict(os.environ), sort_keys=True))
    return END_TURN


async def prompt_error(turn: Turn, text: str) -> str:
    """Streams one chunk, then fails the turn with an internal error while staying alive."""
    turn.chunk(text[:8] or "working")
    raise RpcError(-32603, "Internal error: the model backend is unavailable")


def flood_text(index: int, size: int) -> str:
    """`size` ASCII characters starting with the update's index."""
    head = f"{index:08d} "
    return (head + "x" * max(size - len(head), 0))[:size]


async def flood(turn: Turn, text: str) -> str:
    config = turn.config
    session_id = turn.session.session_id
    # Pre-encode the envelope once; only the text differs between updates.
    marker = "\x00TEXT\x00"
    template = encode(
        {
            "jsonrpc": "2.0",
            "method": "session/update",
            "params": {
                "sessionId": session_id,
                "update": {
                    "sessionUpdate": "agent_message_chunk",
                    "content": {"type": "text", "text": marker},
                },
            },
        }
    )
    head, _, tail = template.partition(json.dumps(marker).encode())
    batch = bytearray()
    texts: list[str] = []
    for index in range(config.count):
        piece = flood_text(index, config.size)
        texts.append(piece)
        batch += head + b'"' + piece.encode() + b'"' + tail
        if len(batch) >= FLOOD_BATCH_BYTES:
            turn.peer.write_raw(batch)
            turn.store.append_many(session_id, AGENT, texts)
            batch.clear()
            texts.clear()
            if await turn.pause(0):
                return CANCELLED
    turn.peer.write_raw(batch)
    turn.store.append_many(session_id, AGENT, texts)
    return END_TURN


def behaviours() -> dict[str, PromptBehaviour]:
    return {
        "echo": echo,
        "tools": tools,
        "slow": echo,
        "crash-mid-prompt": crash_mid_prompt,
        "sigkill-mid-prompt": sigkill_mid_prompt,
        "hang": hang,
        "ignore-cancel": ignore_cancel,
        "close-stdout": close_stdout,
        "garbage-lines": garbage_lines,
        "huge-line": huge_line,
        "stderr-flood": stderr_flood,
        "auth-required": echo,
        "no-load": crash_mid_prompt,
        "load-replay": echo,
        "crash-on-load": crash_mid_prompt,
        "exit-on-start": echo,
        "flood": flood,
        "spawns-children": echo,
        "env": env,
        "prompt-error": prompt_error,
        "hostile": hostile,
        "commit": commit,
        "provider-error": provider_error,
        "tool-then-provider-error": tool_then_provider_error,
    }
