"""FAULT INJECTION for tests: an ASGI wrapper of the control plane's app (never in production).

`EventFaults` fails events batches (`POST /api/nodes/{node}/events`) with 500: with
`fail_every_other_events_batch`, the 1st, 3rd, 5th... batch after it is switched on. With
`store_before_failing` the failing batch reaches the app first and is stored (the
acknowledgement is lost), otherwise it never reaches the app and nothing of it is stored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

EVENTS_PATH = re.compile(r"^/api/nodes/[^/]+/events$")


@dataclass
class EventFaults:
    fail_every_other_events_batch: bool = False
    store_before_failing: bool = False
    batches_seen: int = 0
    stored_then_failed: int = 0

    def next_batch_fails(self) -> bool:
        if not self.fail_every_other_events_batch:
            return False
        self.batches_seen += 1
        return self.batches_seen % 2 == 1


class EventFaultMiddleware:
    """Starlette middleware: `app.add_middleware(EventFaultMiddleware, faults=faults)`."""

    def __init__(self, app: ASGIApp, faults: EventFaults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_batch = (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and EVENTS_PATH.match(scope["path"])
        )
        if not is_batch or not self.faults.next_batch_fails():
            await self.app(scope, receive, send)
            return
        if not self.faults.store_before_failing:
            await _fail(send, "injected fault: events batch refused")
            return
        status: list[int] = []

        async def swallow(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, swallow)
        if status == [200]:
            self.faults.stored_then_failed += 1
        await _fail(send, "injected fault: events batch stored, acknowledgement lost")


async def _fail(send: Send, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})
