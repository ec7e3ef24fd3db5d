"""Drain end to end: a real daemon's supervisor and control link (the fake agent, a real
terminal) against the real control plane on loopback, whose lifecycle loop drives the
Hetzner stand-in. What the daemon reports keeps the node through many warm windows; the
lifetime cap drains it with a turn in flight; the daemon learns of it from a heartbeat's
answer, refuses new sessions, lets the turn finish, says drained; only then is the VM
deleted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from control_plane.dispatch.nodes import NodeSettings
from control_plane.providers.lifecycle import Step
from tests.control_link.harness import FAST_TIMINGS, NODE, Plane, control_plane, daemon_settings
from tests.providers.hetzner_standin import StandIn, serving
from tests.providers.test_node_loop import SETTINGS, TOKEN, ask_for_node, loop, release
from tests.session.harness import Harness, fake, held_at_its_permission, running, text_prompt
from tests.token_files import write_token
from vm_agent.acp.permissions import AskPolicy
from vm_agent.common.redact import Redactor
from vm_agent.control_link import CallbackTokenStore, ControlLink
from vm_agent.runtime.settings import Settings
from vm_agent.session.session import SessionRefused
from vm_agent.terminals.registry import TerminalRegistry, Where

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
WINDOWS = 3  # warm windows each kind of work outlives


class AheadClock:
    """Wall time moved on by the test: the control plane's (heartbeats) and the loop's."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def api() -> AsyncIterator[tuple[StandIn, str]]:
    standin = StandIn(token=TOKEN)
    async with serving(standin) as endpoint:
        yield standin, endpoint


async def test_work_keeps_the_node_then_a_drain_lets_the_turn_finish_before_the_delete(
    tmp_path: Path, api: tuple[StandIn, str]
) -> None:
    clock = AheadClock()
    async with control_plane(tmp_path) as cp:
        # this test's loop is the only one: the app's own would find no credentials and wait
        cp.app.state.node_settings = NodeSettings(enabled=False)
        cp.plane.clock = clock
        async with cp.serving() as url, running(tmp_path, [fake("tools")]) as h:
            await _scenario(cp, h, clock, api, daemon_settings(tmp_path, url))


async def _scenario(
    cp: Plane, h: Harness, clock: AheadClock, api: tuple[StandIn, str], daemon: Settings
) -> None:
    standin, endpoint = api
    engine = cp.plane.engine
    settings = SETTINGS.model_copy(update={"lifetime_cap_s": 7200.0})
    nl = loop(engine, endpoint, clock, settings=settings)

    async def step() -> Step:
        return (await nl.pass_once())[NODE].step

    ask_for_node(engine, NODE, "alice", clock())
    assert await step() is Step.CREATE
    redactor = Redactor()
    tokens = CallbackTokenStore.load(
        write_token(daemon.callback_token_file, cp.callback_token()), redactor=redactor
    )
    terminals = TerminalRegistry(h.log)
    link = ControlLink(
        daemon, h.log, h.supervisor, tokens, redactor=redactor, timings=FAST_TIMINGS,
        terminals=lambda sid: len(terminals.of(sid)),
    )  # fmt: skip
    try:
        await link.client.ready("9.9.9", {"cpus": 2})
        assert await step() is Step.MARK_READY
        s = await h.ready("tools")
        # its task ended as far as placement knows: only what the daemon reports keeps it
        release(engine, NODE, clock())
        async with anyio.create_task_group() as tg:
            where = Where(s.id, h.workdir, None, {}, None, anyio.Event())
            term = await terminals.open(tg, where, cols=80, rows=24, opened_by="alice")
            for _ in range(WINDOWS):  # a terminal left open
                clock.offset += settings.warm_window_s + 100
                await link.heartbeat_once()
                assert await step() is Step.WAIT
            await term.close()
            tg.start_soon(s.prompt, "p1", text_prompt("use your tools"))
            pending = await held_at_its_permission(s)
            for _ in range(WINDOWS):  # a long turn, waiting for a person's answer
                clock.offset += settings.warm_window_s + 100
                await link.heartbeat_once()
                assert await step() is Step.WAIT
            node = await cp.node()
            assert node["usage"]["activity"] == {
                "turns": 1, "permissions": 1, "terminals": 0, "background": 0,
            }  # fmt: skip

            clock.offset += settings.lifetime_cap_s
            await link.heartbeat_once()
            assert await step() is Step.DRAIN  # the cap drains even a busy node
            assert not h.supervisor.draining
            await link.heartbeat_once()  # its answer says drain
            assert h.supervisor.draining and link.status()["draining"] is True
            with pytest.raises(SessionRefused, match="draining"):
                await h.supervisor.start_session("tools", h.workdir)
            clock.offset += 60
            await link.heartbeat_once()
            assert await step() is Step.WAIT  # the turn goes on
            assert len(standin.live()) == 1 and not link.drained_reported
            assert not h.supervisor.drained  # prompts are still taken while a turn runs
            assert isinstance(s.permissions, AskPolicy)
            s.permissions.respond(pending.request_id, "allow")
        assert s.outcomes["p1"].outcome == "completed"  # finished, not cut short
        assert s.state.value == "ready"
        assert await step() is Step.WAIT  # no heartbeat since: not drained yet
        clock.offset += 60
        await link.heartbeat_once()
        assert link.drained_reported and h.supervisor.drained
        assert await step() is Step.DELETE
        assert standin.live() == []
        assert [x.id for x in h.supervisor.sessions.values()] == [s.id]
    finally:
        await link.client.aclose()
