"""The outbox sender on its own against the real control plane: filter, cursor, refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from tests.token_files import write_token
from vm_agent.control_link import CallbackTokenStore, ControlPlaneClient, OutboxSender
from vm_agent.eventlog import EventLog

from .harness import FAST_TIMINGS, NODE, control_plane
from .test_link import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _chunk(text: str) -> dict[str, object]:
    content = {"type": "text", "text": text}
    return {
        "sessionId": "a",
        "update": {"sessionUpdate": "agent_message_chunk", "content": content},
    }


async def test_filtered_events_move_the_cursor_and_a_refused_event_is_isolated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with control_plane(tmp_path) as cp, cp.serving() as url:
        cp.plane.settings.max_body_bytes = 4000  # one event below is bigger than that
        tokens = CallbackTokenStore.load(write_token(tmp_path / "t", cp.callback_token()))
        async with (
            EventLog.open(tmp_path / "events.sqlite3") as log,
            ControlPlaneClient(url, NODE, tokens, retry=FAST_TIMINGS.retry) as client,
        ):
            await log.append("s", "session.state", {"state": "ready"})
            await log.append("s", "acp.update", {"update": {"sessionUpdate": "tool_call"}})
            await log.append("s", "acp.update", _chunk("hello"))
            await log.append("s", "acp.update", _chunk("x" * 6000))  # 413 even alone
            await log.append("s", "prompt.finished", {"prompt_id": "p", "outcome": "completed"})
            await log.append("s", "custom.debug", {"not": "forwarded"})
            sender = OutboxSender(log, client, batch_max_events=100)
            async with anyio.create_task_group() as tg:
                await tg.start(sender.run)
                await wait_for(lambda: sender.depth == 0)
                await log.append("s", "session.state", {"state": "stopped"})  # wakes it
                await wait_for(lambda: sender.depth == 0 and sender.delivered == 4)
                tg.cancel_scope.cancel()
            cursor = await log.get_delivery_cursor("control-plane")
        stored = await cp.events()
    assert [(e["seq"], e["type"]) for e in stored] == [
        (1, "session.state"),
        (3, "acp.update"),
        (5, "prompt.finished"),
        (7, "session.state"),
    ]
    assert sender.skipped == 1
    assert cursor == 7
    refused = [r for r in caplog.records if "refuses event s seq 4" in r.getMessage()]
    assert len(refused) == 1
