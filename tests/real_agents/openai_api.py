"""A stand-in for OpenAI's Responses API (``POST /v1/responses``, streamed as SSE).

Codex (under codex-acp) talks to it through a model provider in its ``config.toml``
(``base_url`` naming this server, ``wire_api = "responses"``). Every request is a turn.

Run it alone: ``python -m tests.real_agents.openai_api --port N [--script F] [--record F]``.
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

USAGE = {
    "input_tokens": 12,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 17,
}

# OpenAI's error codes by HTTP status (its API reference, *Error codes*).
ERRORS = {
    429: ("rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", "The server had an error while processing your request."),
    503: ("server_is_overloaded", "The server is overloaded. Please try again later."),
    529: ("server_is_overloaded", "The server is overloaded. Please try again later."),
}


def error_response(fail: Failure) -> JSONResponse:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    code, message = ERRORS.get(fail.status, ERRORS[500])
    kind = "requests" if fail.status == 429 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=fail.status, headers=fail.headers())


def app(script: Script) -> Starlette:
    ids = itertools.count(1)

    async def responses(request: Request) -> Response:
        recorded = await recorded_request(request, script, turn=True)
        reply = script.take()
        if reply.fail is not None:
            return error_response(reply.fail)
        return StreamingResponse(
            _stream(next(ids), reply, script, recorded), media_type="text/event-stream"
        )

    return Starlette(routes=[Route("/v1/responses", responses, methods=["POST"])])


def _event(data: dict[str, Any]) -> bytes:
    return sse(data, str(data["type"]))


async def _stream(n: int, reply: Reply, script: Script, recorded: Recorded) -> AsyncIterator[bytes]:
    response_id = f"resp_standin_{n:04d}"
    try:
        yield _event({"type": "response.created", "response": {"id": response_id}})
        index = 0
        pieces = reply.pieces()
        if pieces:
            item: dict[str, Any] = {
                "type": "message",
                "id": f"msg_standin_{n:04d}",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            yield _event(
                {"type": "response.output_item.added", "output_index": index, "item": item}
            )
            for k, piece in enumerate(pieces):
                yield _event(
                    {
                        "type": "response.output_text.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "delta": piece,
                    }
                )
                if reply.hold and k == 0:
                    await script.hold()
            done = {
                **item,
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
            yield _event({"type": "response.output_item.done", "output_index": index, "item": done})
            index += 1
        elif reply.hold:
            await script.hold()
        if reply.tool is not None:
            # "namespace/name": a tool of a namespace (Codex puts each MCP server's tools in
            # one, `mcp__<server>`), called with the item's `namespace`.
            namespace, _, name = reply.tool.name.rpartition("/")
            call = {
                "type": "function_call",
                "id": f"fc_standin_{n:04d}",
                "call_id": f"call_standin_{n:04d}",
                **({"namespace": namespace} if namespace else {}),
                "name": name,
                "arguments": json.dumps(reply.tool.arguments),
                "status": "completed",
            }
            added = {**call, "arguments": "", "status": "in_progress"}
            yield _event(
                {"type": "response.output_item.added", "output_index": index, "item": added}
            )
            yield _event({"type": "response.output_item.done", "output_index": index, "item": call})
        yield _event(
            {
                "type": "response.completed",
                "response": {"id": response_id, "status": "completed", "usage": USAGE},
            }
        )
    except BaseException:
        recorded.aborted = True
        raise


if __name__ == "__main__":
    raise SystemExit(main(app))
