"""ControlLink against the real control plane on loopback: ready, heartbeats, token refresh,
and what a 401 or 403 does (said once, sessions untouched, the outbox waits, no hot loop)."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from tests.token_files import write_token
from vm_agent.common.redact import Redactor
from vm_agent.control_link import CallbackTokenStore, ControlLink, LinkState
from vm_agent.eventlog import EventLog

from .harness import FAST_TIMINGS, NODE, control_plane, daemon_settings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class LinkMetricsForTest:
    """The three metrics the link uses, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.outbox_depth = Gauge("t_outbox_depth", "d", registry=r)
        self.callback_failures_total = Counter("t_cb_failures", "f", ["reason"], registry=r)
        self.callback_token_valid = Gauge("t_cb_token_valid", "v", registry=r)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def _gaps_per_path(times: list[tuple[str, float]]) -> dict[str, list[float]]:
    """Seconds between one call to a node path and the next call to the same path."""
    last: dict[str, float] = {}
    gaps: dict[str, list[float]] = {}
    for path, at in times:
        if not path.startswith("/api/nodes/"):
            continue
        if path in last:
            gaps.setdefault(path, []).append(at - last[path])
        last[path] = at
    return gaps


def _calls_per_path(times: list[tuple[str, float]]) -> int:
    """The fewest calls any node path has had (0 while none was called)."""
    counts: dict[str, int] = {}
    for path, _ in times:
        if path.startswith("/api/nodes/"):
            counts[path] = counts.get(path, 0) + 1
    return min(counts.values(), default=0)


async def wait_for(check: Callable[[], bool], within_s: float = 10.0) -> None:
    with anyio.fail_after(within_s):
        while not check():
            await anyio.sleep(0.02)


async def test_ready_heartbeat_and_token_refresh(tmp_path: Path) -> None:
    async with control_plane(tmp_path) as cp, cp.serving() as url:
        # Minted 400 s ago with a 600 s life: past half of it, so the heartbeat refreshes it.
        old = cp.callback_token(age_s=400)
        settings = daemon_settings(tmp_path, url)
        path = write_token(settings.callback_token_file, old)
        redactor = Redactor()
        tokens = CallbackTokenStore.load(path, redactor=redactor)
        metrics = LinkMetricsForTest()
        async with EventLog.open(settings.event_log_path) as log:
            link = ControlLink(
                settings,
                log,
                None,
                tokens,
                redactor=redactor,
                metrics=metrics,
                timings=FAST_TIMINGS,
                version="9.9.9",
                capacity={"cpus": 2},
            )
            async with anyio.create_task_group() as tg:
                await tg.start(link.run)
                await wait_for(lambda: link.token_refreshes >= 1)
                refreshed = tokens.value
                count = len(cp.seen)
                await wait_for(lambda: link.heartbeats >= 2)
                status = link.status()
                tg.cancel_scope.cancel()
        node = await cp.node()
    assert refreshed != old
    assert path.read_text().strip() == refreshed
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert CallbackTokenStore.load(path).value == refreshed  # a restarted daemon takes it
    # Every call after the refresh carried the new token.
    later = [tok for p, tok in cp.seen[count:] if p.startswith(f"/api/nodes/{NODE}/")]
    assert later and all(tok == refreshed for tok in later)
    assert node["version"] == "9.9.9"
    assert status["control_plane"] == "ok"
    assert status["ready_sent"] is True
    assert status["heartbeat_interval_s"] == 1.0  # the control plane's answer
    assert status["last_heartbeat_age_s"] is not None
    assert 0 < status["token_expires_in_s"] <= 600
    assert old not in repr(status) and refreshed not in repr(status)
    assert metrics.value("t_cb_token_valid") == 1
    # Both tokens are secrets to the redactor.
    assert old not in redactor.redact(old) and refreshed not in redactor.redact(refreshed)


async def test_heartbeat_reports_sessions_and_usage(tmp_path: Path) -> None:
    from vm_agent.process.catalog import Catalog
    from vm_agent.session.config import SessionConfig
    from vm_agent.session.supervisor import Supervisor

    async with control_plane(tmp_path) as cp, cp.serving() as url:
        settings = daemon_settings(tmp_path, url)
        redactor = Redactor()
        tokens = CallbackTokenStore.load(
            write_token(settings.callback_token_file, cp.callback_token()), redactor=redactor
        )
        async with EventLog.open(settings.event_log_path) as log:
            supervisor = Supervisor(
                log=log, catalog=Catalog.load(), config=SessionConfig(), redactor=redactor
            )
            link = ControlLink(
                settings, log, supervisor, tokens, redactor=redactor, timings=FAST_TIMINGS
            )
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                session = await supervisor.start_session("fake", tmp_path)
                await session.wait_settled()
                await tg.start(link.run)
                before = link.heartbeats
                await wait_for(lambda: link.heartbeats > before)
                node = await cp.node()
                await supervisor.shutdown(5)
                tg.cancel_scope.cancel()
    sessions = node["sessions"]
    assert sessions == [{"session_id": session.id, "state": "ready", "agent": "fake"}]
    assert node["usage"]["mem_total_bytes"] > 0
    assert node["capacity"]["agents"] == Catalog.load().names()


async def test_a_token_for_another_node_is_forbidden_said_once_and_nothing_spins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with control_plane(tmp_path) as cp, cp.serving() as url:
        settings = daemon_settings(tmp_path, url)
        tokens = CallbackTokenStore.load(
            write_token(settings.callback_token_file, cp.callback_token("node-b"))
        )
        metrics = LinkMetricsForTest()
        async with EventLog.open(settings.event_log_path) as log:
            for i in range(5):
                await log.append("s1", "session.state", {"state": "ready", "i": i})
            link = ControlLink(
                settings,
                log,
                None,
                tokens,
                redactor=Redactor(),
                metrics=metrics,
                timings=FAST_TIMINGS,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(link.run)
                await wait_for(lambda: link.health.state is LinkState.FORBIDDEN)
                # Some retries of each call (a hot loop would make them by the hundred).
                await wait_for(lambda: _calls_per_path(cp.times) >= 3, within_s=60)
                retries = list(cp.times)  # a new event may wake the outbox sooner: not counted
                await log.append("s1", "session.state", {"state": "ready", "i": 5})
                await wait_for(lambda: link.outbox.depth == 6)
                status = link.status()
                tg.cancel_scope.cancel()
        stored = await cp.events()
    assert status["control_plane"] == "forbidden"
    assert status["ready_sent"] is False
    assert status["outbox_depth"] == 6
    assert stored == []
    # Each retry of a forbidden call waits (a lower bound: a slow machine only waits more).
    gaps = _gaps_per_path(retries)
    assert gaps and all(gap >= 0.2 for path_gaps in gaps.values() for gap in path_gaps), gaps
    assert metrics.value("t_cb_token_valid") == 0
    assert (metrics.value("t_cb_failures_total", reason="forbidden") or 0) >= 2
    said = [r for r in caplog.records if "forbids this node" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.ERROR


async def test_an_expired_token_is_unauthorized_until_a_new_one_is_in_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with control_plane(tmp_path) as cp, cp.serving() as url:
        settings = daemon_settings(tmp_path, url)
        path = write_token(settings.callback_token_file, cp.callback_token(age_s=700))
        tokens = CallbackTokenStore.load(path)
        metrics = LinkMetricsForTest()
        async with EventLog.open(settings.event_log_path) as log:
            await log.append("s1", "session.state", {"state": "ready"})
            link = ControlLink(
                settings,
                log,
                None,
                tokens,
                redactor=Redactor(),
                metrics=metrics,
                timings=FAST_TIMINGS,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(link.run)
                await wait_for(lambda: link.health.state is LinkState.UNAUTHORIZED)
                await wait_for(lambda: link.outbox.depth == 1)
                unauthorized = link.status()
                assert metrics.value("t_cb_token_valid") == 0
                # The operator (or cloud-init) puts a fresh token in the file.
                write_token(path, cp.callback_token())
                await wait_for(lambda: link.ready_sent and link.outbox.depth == 0)
                recovered = link.status()
                tg.cancel_scope.cancel()
        stored = await cp.events()
    assert unauthorized["control_plane"] == "unauthorized"
    assert "expired" in (unauthorized["detail"] or "")
    assert recovered["control_plane"] == "ok"
    assert metrics.value("t_cb_token_valid") == 1
    assert [(e["session_id"], e["seq"]) for e in stored] == [("s1", 1)]
    said = [r for r in caplog.records if "refuses the callback token" in r.getMessage()]
    assert len(said) == 1
