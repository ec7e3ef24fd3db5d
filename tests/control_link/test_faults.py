"""Faults: the control plane stopped and restarted, then failing every other batch with 500
(with and without storing it first), while sessions produce events. At the end it holds
every forwarded event exactly once, in order per session."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from control_plane.storage.db import node_events
from tests.token_files import write_token
from vm_agent.common.redact import Redactor
from vm_agent.control_link import CallbackTokenStore, ControlLink, LinkState, is_forwarded
from vm_agent.control_link.outbox import DEFAULT_TYPES
from vm_agent.eventlog import EventLog
from vm_agent.process.catalog import AgentSpec, Catalog, fake_agent_command
from vm_agent.session.config import SessionConfig
from vm_agent.session.session import AgentSession
from vm_agent.session.supervisor import Supervisor

from .harness import FAST_TIMINGS, NODE, Plane, control_plane, daemon_settings
from .test_link import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

TEXT = "the quick brown fox jumps over the lazy dog " * 3


async def _prompt_all(sessions: list[AgentSession], round_: str, prompts: int = 2) -> None:
    async def one(session: AgentSession) -> None:
        for i in range(prompts):
            outcome = await session.prompt(f"{round_}-{i}", [{"type": "text", "text": TEXT}])
            assert outcome.outcome == "completed"

    async with anyio.create_task_group() as tg:
        for session in sessions:
            tg.start_soon(one, session)


async def expected_events(log: EventLog, session_ids: list[str]) -> list[tuple[Any, ...]]:
    """What the control plane must hold: every event passing the filter, in seq order."""
    out: list[tuple[Any, ...]] = []
    for sid in sorted(session_ids):
        for event in await log.read(sid, 0, 100_000):
            if event.type in DEFAULT_TYPES and is_forwarded(event):
                out.append((sid, event.seq, event.type, event.data))
    return out


def stored_events(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["session_id"], e["seq"], e["type"], e["data"]) for e in events]


def assert_stored_in_order(cp: Plane) -> None:
    """Per session, the control plane stored seqs in increasing order (row id order)."""
    query = (
        select(node_events.c.session_id, node_events.c.seq)
        .where(node_events.c.node_id == NODE)
        .order_by(node_events.c.id)
    )
    with cp.plane.engine.connect() as conn:
        rows = conn.execute(query).all()
    last: dict[str, int] = {}
    for sid, seq in rows:
        assert seq > last.get(sid, 0), (sid, seq, last.get(sid))
        last[sid] = seq


async def test_restart_and_500s_lose_nothing_and_double_nothing(tmp_path: Path) -> None:
    spec = AgentSpec(name="fake", command=fake_agent_command("--scenario", "echo", "--chunks", "6"))
    timings = dataclasses.replace(FAST_TIMINGS, outbox_batch_max_events=7)
    async with control_plane(tmp_path) as cp:
        settings = daemon_settings(tmp_path, cp.url)
        redactor = Redactor()
        tokens = CallbackTokenStore.load(
            write_token(settings.callback_token_file, cp.callback_token()), redactor=redactor
        )
        async with EventLog.open(settings.event_log_path) as log:
            supervisor = Supervisor(
                log=log,
                catalog=Catalog({"fake": spec}),
                config=SessionConfig(),
                redactor=redactor,
            )
            link = ControlLink(
                settings, log, supervisor, tokens, redactor=redactor, timings=timings
            )
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                sessions = [await supervisor.start_session("fake", tmp_path) for _ in range(3)]
                for session in sessions:
                    await session.wait_settled()
                async with cp.serving():
                    await tg.start(link.run)
                    await _prompt_all(sessions, "up")
                    await wait_for(lambda: link.outbox.depth == 0)
                # Stopped: sessions go on, the outbox grows on disk.
                await _prompt_all(sessions, "down")
                await wait_for(lambda: link.health.state is LinkState.UNREACHABLE)
                assert link.outbox.depth > 0
                async with cp.serving():
                    faults = cp.faults
                    faults.fail_every_other_events_batch = True
                    faults.store_before_failing = True  # acknowledgements lost
                    await _prompt_all(sessions, "lost-acks")
                    await wait_for(lambda: link.outbox.depth == 0, 30)
                    faults.store_before_failing = False  # batches refused outright
                    await _prompt_all(sessions, "refused")
                    await log.flush()
                    await wait_for(lambda: link.outbox.depth == 0, 30)
                    stored = await cp.events()
                    assert link.health.state is LinkState.OK
                expected = await expected_events(log, [s.id for s in sessions])
                await supervisor.shutdown(5)
                tg.cancel_scope.cancel()
        assert_stored_in_order(cp)
    assert stored_events(stored) == expected
    kinds = {e[2] for e in expected}
    assert {"session.state", "prompt.started", "prompt.finished", "acp.update"} <= kinds
    assert faults.batches_seen >= 4  # the faults did hit batches
