"""A stand-in for the Gemini API (``POST /v1beta/models/M:streamGenerateContent?alt=sse``).

gemini-cli talks to it when ``GOOGLE_GEMINI_BASE_URL`` names it. A streamed request is a
turn; ``generateContent`` (the model router's classifier, the next-speaker check) is a side
call, answered with JSON that satisfies both; ``countTokens`` gets a count.

Run it alone: ``python -m tests.real_agents.gemini_api --port N [--script F] [--record F]``.
"""

from __future__ import annotations

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
)

USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17}
# What the side calls parse: the router wants `model_choice`, the next-speaker check
# `next_speaker`; both take their field and ignore the rest.
SIDE_ANSWER = json.dumps(
    {"reasoning": "scripted stand-in", "model_choice": "pro", "next_speaker": "user"}
)

# Google's error statuses by HTTP status (the Gemini API's troubleshooting page).
ERRORS = {
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    529: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def error_response(fail: Failure) -> JSONResponse:
    """Google's error body: ``{"error": {"code", "message", "status"}}``."""
    status, message = ERRORS.get(fail.status, ERRORS[500])
    body = {"error": {"code": fail.status, "message": message, "status": status}}
    return JSONResponse(body, status_code=fail.status, headers=fail.headers())


def app(script: Script) -> Starlette:
    async def models(request: Request) -> Response:
        action = request.path_params["action"]
        if action == "streamGenerateContent":
            recorded = await recorded_request(request, script, turn=True)
            reply = script.take()
            if reply.fail is not None:
                return error_response(reply.fail)
            return StreamingResponse(
                _stream(reply, script, recorded), media_type="text/event-stream"
            )
        await recorded_request(request, script, turn=False)
        if action == "countTokens":
            return JSONResponse({"totalTokens": 12})
        if action == "generateContent":
            return JSONResponse(_chunk([{"text": SIDE_ANSWER}], finish=True))
        return JSONResponse(
            {"error": {"code": 404, "message": f"no {action}", "status": "NOT_FOUND"}},
            status_code=404,
        )

    return Starlette(routes=[Route("/{version}/models/{model}:{action}", models, methods=["POST"])])


def _chunk(parts: list[dict[str, Any]], *, finish: bool = False) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "usageMetadata": USAGE, "modelVersion": "gemini-stand-in"}


def _data(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\r\n\r\n".encode()


async def _stream(reply: Reply, script: Script, recorded: Recorded) -> AsyncIterator[bytes]:
    chunks: list[list[dict[str, Any]]] = [[{"text": piece}] for piece in reply.pieces()]
    if reply.tool is not None:
        chunks.append([{"functionCall": {"name": reply.tool.name, "args": reply.tool.arguments}}])
    while len(chunks) < (2 if reply.hold else 1):
        chunks.append([{"text": ""}])  # a held answer is never finished before the hold
    try:
        for k, parts in enumerate(chunks):
            yield _data(_chunk(parts, finish=k == len(chunks) - 1))
            if reply.hold and k == 0:
                await script.hold()
    except BaseException:
        recorded.aborted = True
        raise


if __name__ == "__main__":
    raise SystemExit(main(app))
