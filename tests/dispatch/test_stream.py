"""A task's live events as Server-Sent Events: each event once, in seq order, status
changes, a final `end` with the task's record; a reconnect with Last-Event-ID (or
`after`) goes on from where it left, nothing lost or repeated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.dispatch.harness import Stack, stack

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def read_stream(s: Stack, path: str, **headers: str) -> list[tuple[str, str | None, Any]]:
    """(event, id, data) of each message until `end`; comments are checked and skipped."""
    out: list[tuple[str, str | None, Any]] = []
    async with s.client.stream("GET", path, headers={**s.user(), **headers}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event: str | None = None
        ident: str | None = None
        async for line in r.aiter_lines():
            if line.startswith(":"):
                continue
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                assert event is not None
                out.append((event, ident, json.loads(line[6:])))
                if event == "end":
                    return out
                event = ident = None
    raise AssertionError(f"the stream ended without `end`: {out}")


async def test_the_stream_follows_a_task_to_its_end_and_resumes(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        await s.submit(taskId="t1", agent="fake", prompt="stream me")
        whole = await read_stream(s, "/api/tasks/t1/events/stream")
        end = whole[-1]
        assert end[0] == "end" and end[2]["status"] == "completed"
        assert "owner" not in end[2]
        statuses = [d["status"] for e, _, d in whole if e == "status"]
        assert statuses[-1] == "completed" and len(statuses) == len(set(statuses))
        events = [(e, i, d) for e, i, d in whole if e not in ("status", "end")]
        seqs = [d["seq"] for _, _, d in events]
        assert seqs == sorted(set(seqs)) and all(i == str(d["seq"]) for _, i, d in events)
        assert all(e == d["type"] for e, _, d in events)
        # What the stream gave is what the store holds (up to the end).
        stored = await s.events("t1")
        assert [e["seq"] for e in stored][: len(seqs)] == seqs

        # A reconnect after the third event: the rest, once.
        cut = seqs[2]
        again = await read_stream(s, "/api/tasks/t1/events/stream", **{"Last-Event-ID": str(cut)})
        resumed = [d["seq"] for e, _, d in again if e not in ("status", "end")]
        assert resumed == [q for q in [e["seq"] for e in await s.events("t1")] if q > cut]
        by_after = await read_stream(s, f"/api/tasks/t1/events/stream?after={cut}")
        assert [d["seq"] for e, _, d in by_after if e not in ("status", "end")] == resumed
        r = await s.client.get(
            "/api/tasks/t1/events/stream", headers={**s.user(), "Last-Event-ID": "x"}
        )
        assert r.status_code == 422
