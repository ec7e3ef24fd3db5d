"""Metrics derived from real events of a real EventLog, checked in the rendered text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from vm_agent.eventlog import EventLog
from vm_agent.runtime.metrics import Metrics
from vm_agent.session.crash_report import CrashReport

pytestmark = pytest.mark.anyio


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def crash(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "session_id": "s1",
        "agent": "fake",
        "classification": "resumable",
        "reason": "exit 1",
        "recovered": True,
        "recovery_error": None,
        "exit_code": 1,
        "signal": None,
        "signal_name": None,
        "oom_killed": False,
        "uptime_s": 1.5,
        "last_method": "session/prompt",
        "stderr_tail": "boom",
        "stderr_cut": False,
        "message": "m",
        "ts": 1.0,
    }
    report.update(overrides)
    return CrashReport.model_validate(report).to_json()


def outcome(prompt_id: str, kind: str) -> dict[str, Any]:
    return {"session_id": "s1", "prompt_id": prompt_id, "outcome": kind}


async def test_counters_follow_the_event_stream(tmp_path: Path) -> None:
    metrics = Metrics()
    async with EventLog.open(tmp_path / "events.sqlite3") as log:
        remove = log.add_listener(metrics.observe_events)
        sid = "secret-session-id-123"
        await log.append(sid, "session.state", {"state": "starting", "note": "n"})
        await log.append(sid, "session.state", {"state": "ready", "note": "n"})
        for i, kind in enumerate(["completed", "completed", "cancelled", "timeout"]):
            await log.append(sid, "prompt.started", {"prompt_id": f"p{i}", "prompt": []})
            await log.append(sid, "acp.update", {"sessionUpdate": "agent_message_chunk"})
            await log.append(sid, "prompt.finished", outcome(f"p{i}", kind))
        await log.append(sid, "permission.requested", {"request_id": "r1", "request": {}})
        await log.append(sid, "permission.resolved", {"request_id": "r1", "outcome": {}})
        # A crash recovered...
        await log.append(sid, "session.state", {"state": "recovering", "note": "n"})
        await log.append(sid, "agent.crash_report", crash())
        await log.append(sid, "prompt.finished", outcome("p9", "recovered"))
        # ... one whose recovery failed ...
        await log.append(sid, "session.state", {"state": "recovering", "note": "n"})
        await log.append(sid, "agent.crash_report", crash(recovered=False, recovery_error="x"))
        # ... and one not worth recovering (no recovery tried).
        await log.append(
            "s2", "agent.crash_report", crash(classification="crashed", recovered=False)
        )
        await log.append("s2", "prompt.finished", outcome("p1", "something-new"))
        await log.append("s2", "custom.type", {"x": 1})
        await log.flush()
        remove()

    assert value(metrics, "vm_agent_prompts_total", outcome="completed") == 2
    assert value(metrics, "vm_agent_prompts_total", outcome="cancelled") == 1
    assert value(metrics, "vm_agent_prompts_total", outcome="timeout") == 1
    assert value(metrics, "vm_agent_prompts_total", outcome="recovered") == 1
    assert value(metrics, "vm_agent_prompts_total", outcome="crashed") == 0
    assert value(metrics, "vm_agent_prompts_total", outcome="other") == 1
    assert value(metrics, "vm_agent_crash_reports_total") == 3
    assert value(metrics, "vm_agent_disconnects_total", classification="resumable") == 2
    assert value(metrics, "vm_agent_disconnects_total", classification="crashed") == 1
    assert value(metrics, "vm_agent_disconnects_total", classification="timeout") == 0
    assert value(metrics, "vm_agent_recoveries_total", result="started") == 2
    assert value(metrics, "vm_agent_recoveries_total", result="succeeded") == 1
    assert value(metrics, "vm_agent_recoveries_total", result="failed") == 1
    assert value(metrics, "vm_agent_agent_restarts_total") == 2
    by_type = {
        "session.state": 4,
        "prompt.started": 4,
        "acp.update": 4,
        "prompt.finished": 6,
        "permission.requested": 1,
        "permission.resolved": 1,
        "agent.crash_report": 3,
        "other": 1,
    }
    for type_, count in by_type.items():
        assert value(metrics, "vm_agent_events_appended_total", type=type_) == count
    body = metrics.render()[0].decode()
    # No unbounded or secret value reaches a label.
    for leaked in ("secret-session-id", "p0", "custom.type", "something-new", "s2"):
        assert leaked not in body


def test_gauges_and_direct_counters() -> None:
    metrics = Metrics()
    metrics.viewers_connected.inc(3)
    metrics.viewers_connected.dec()
    metrics.viewer_overflows_total.inc()
    metrics.ws_auth_failures_total.inc(2)
    metrics.outbox_depth.set(17)
    metrics.callback_token_valid.set(1)
    metrics.jsonrpc_message("viewer", "in", 5)
    metrics.jsonrpc_messages_total.labels(peer="agent", direction="out").inc()
    metrics.callback_failure("unauthorized")
    metrics.callback_failure("Bearer abc.def.ghi")  # a careless caller: bounded anyway
    with pytest.raises(ValueError):
        metrics.jsonrpc_message("viewer", "sideways")
    assert value(metrics, "vm_agent_viewers_connected") == 2
    assert value(metrics, "vm_agent_viewer_overflows_total") == 1
    assert value(metrics, "vm_agent_ws_auth_failures_total") == 2
    assert value(metrics, "vm_agent_outbox_depth") == 17
    assert value(metrics, "vm_agent_callback_token_valid") == 1
    assert value(metrics, "vm_agent_jsonrpc_messages_total", peer="viewer", direction="in") == 5
    assert value(metrics, "vm_agent_jsonrpc_messages_total", peer="agent", direction="out") == 1
    assert value(metrics, "vm_agent_jsonrpc_messages_total", peer="agent", direction="in") == 0
    assert value(metrics, "vm_agent_callback_failures_total", reason="unauthorized") == 1
    assert value(metrics, "vm_agent_callback_failures_total", reason="other") == 1
    assert value(metrics, "vm_agent_callback_failures_total", reason="network") == 0
    assert "abc.def" not in metrics.render()[0].decode()


async def test_scrape_time_sources(tmp_path: Path) -> None:
    metrics = Metrics()
    # Before any source: every state present at 0.
    states = ["starting", "ready", "prompting", "cancelling", "recovering", "error", "stopped"]
    for state in states:
        assert value(metrics, "vm_agent_sessions", state=state) == 0
    counts: Mapping[str, int] = {"ready": 2, "prompting": 1}
    metrics.set_session_source(lambda: counts)
    assert value(metrics, "vm_agent_sessions", state="ready") == 2
    assert value(metrics, "vm_agent_sessions", state="prompting") == 1
    assert value(metrics, "vm_agent_sessions", state="error") == 0
    counts = {"stopped": 4}  # read again at the next scrape
    assert value(metrics, "vm_agent_sessions", state="stopped") == 4
    assert value(metrics, "vm_agent_sessions", state="ready") == 0
    async with EventLog.open(tmp_path / "events.sqlite3") as log:
        await log.append("s1", "acp.update", {"text": "x" * 10_000})
        metrics.set_eventlog_size_source(log.size_bytes)
        size = value(metrics, "vm_agent_eventlog_bytes")
        assert size == log.size_bytes() and size > 10_000


def test_failing_sources_do_not_break_the_scrape() -> None:
    metrics = Metrics()

    def broken() -> Mapping[str, int]:
        raise RuntimeError("nope")

    def broken_size() -> int:
        raise OSError("gone")

    metrics.set_session_source(broken)
    metrics.set_eventlog_size_source(broken_size)
    assert value(metrics, "vm_agent_sessions", state="ready") == 0
    size = value(metrics, "vm_agent_eventlog_bytes")
    assert math.isnan(size)
    metrics.prompts_total.labels(outcome="completed").inc()
    assert value(metrics, "vm_agent_prompts_total", outcome="completed") == 1


def test_own_registry() -> None:
    a, b = Metrics(), Metrics()  # two instances: no duplicate registration
    a.crash_reports_total.inc()
    assert value(b, "vm_agent_crash_reports_total") == 0
    assert REGISTRY.get_sample_value("vm_agent_crash_reports_total") is None
