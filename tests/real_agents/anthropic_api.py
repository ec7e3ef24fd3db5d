"""A stand-in for Anthropic's Messages API (``POST /v1/messages``, streamed as SSE).

Claude Code (under claude-agent-acp) talks to it when ``ANTHROPIC_BASE_URL`` names it. A
turn is a streamed request that offers tools (the agent's own loop); anything else (a
request without tools, a non-streamed one) is a side call and gets the script's default.

Run it alone: ``python -m tests.real_agents.anthropic_api --host 127.0.0.1 --port 8765
[--script replies.json] [--record requests.jsonl]``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.real_agents.model_api import (
    Failure,
    Recorded,
    Reply,
    Script,
    main,
    recorded_request,
    sse,
)

MODEL_FALLBACK = "claude-stand-in"
# Anthropic's error types and messages by HTTP status (its API reference, *Errors*).
ERRORS = {
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(fail: Failure) -> dict[str, Any]:
    """Anthropic's error body: ``{"type": "error", "error": {"type", "message"}}`` (also
    the data of a stream's ``event: error``)."""
    kind, message = ERRORS.get(fail.status, ("api_error", "Internal server error"))
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_response(fail: Failure) -> JSONResponse:
    return JSONResponse(error_body(fail), status_code=fail.status, headers=fail.headers())


def _usage(output_tokens: int) -> dict[str, int]:
    return {"input_tokens": 12, "output_tokens": output_tokens}


class _Ids:
    def __init__(self) -> None:
        self._next = itertools.count(1)

    def __call__(self, prefix: str) -> str:
        return f"{prefix}_standin_{next(self._next):04d}"


def app(script: Script) -> Starlette:
    ids = _Ids()

    async def messages(request: Request) -> Response:
        raw = json.loads(await request.body() or b"{}")
        is_turn = bool(raw.get("stream")) and bool(raw.get("tools"))
        recorded = await recorded_request(request, script, turn=is_turn)
        reply = script.take() if is_turn else script.default
        if reply.fail is not None:
            return error_response(reply.fail)
        model = str(raw.get("model") or MODEL_FALLBACK)
        if not raw.get("stream"):
            return JSONResponse(_message(ids, model, reply))
        return StreamingResponse(
            _stream(ids, model, reply, script, recorded), media_type="text/event-stream"
        )

    async def count_tokens(request: Request) -> Response:
        await recorded_request(request, script, turn=False)
        return JSONResponse({"input_tokens": 12})

    async def root(request: Request) -> Response:
        # Claude Code checks that the base URL answers at all.
        await recorded_request(request, script, turn=False)
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/", root, methods=["GET", "HEAD"]),
        ]
    )


def _message(ids: _Ids, model: str, reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    if reply.tool is not None:
        content.append(
            {
                "type": "tool_use",
                "id": ids("toolu"),
                "name": reply.tool.name,
                "input": reply.tool.arguments,
            }
        )
    return {
        "id": ids("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if reply.tool else "end_turn",
        "stop_sequence": None,
        "usage": _usage(5),
    }


async def _stream(
    ids: _Ids, model: str, reply: Reply, script: Script, recorded: Recorded
) -> AsyncIterator[bytes]:
    start: dict[str, Any] = {
        "id": ids("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(1),
    }
    try:
        yield sse({"type": "message_start", "message": start}, "message_start")
        index = 0
        pieces = reply.pieces()
        if pieces:
            text_block = {"type": "text", "text": ""}
            yield sse(
                {"type": "content_block_start", "index": index, "content_block": text_block},
                "content_block_start",
            )
            for n, piece in enumerate(pieces):
                delta = {"type": "text_delta", "text": piece}
                yield sse(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )
                if reply.hold and n == 0:
                    await script.hold()
                if reply.fail_mid is not None:  # the stream cut by the provider's error
                    yield sse(error_body(reply.fail_mid), "error")
                    return
            yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
            index += 1
        elif reply.hold:
            await script.hold()
        if reply.tool is not None:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": ids("toolu"),
                "name": reply.tool.name,
                "input": {},
            }
            yield sse(
                {"type": "content_block_start", "index": index, "content_block": block},
                "content_block_start",
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(reply.tool.arguments)}
            yield sse(
                {"type": "content_block_delta", "index": index, "delta": delta},
                "content_block_delta",
            )
            yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        stop = "tool_use" if reply.tool else "end_turn"
        yield sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
            "message_delta",
        )
        yield sse({"type": "message_stop"}, "message_stop")
    except BaseException:
        recorded.aborted = True
        raise


if __name__ == "__main__":
    raise SystemExit(main(app))
