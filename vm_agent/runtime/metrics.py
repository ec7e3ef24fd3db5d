"""Prometheus metrics of the daemon, in a registry of its own.

Most counters are derived from the event log (`observe_events` is an
EventLog listener), so one stream feeds both the viewers and the metrics.
Every label value comes from a small fixed set (unknown values become
"other"): no session ids, prompt ids or secrets ever reach a label.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from vm_agent.core.vocabulary import DisconnectClass, OutcomeKind, SessionState
from vm_agent.eventlog import EVENT_TYPES, Event

log = logging.getLogger(__name__)

OTHER = "other"
EVENT_TYPE_LABELS = frozenset(EVENT_TYPES | {OTHER})
OUTCOME_LABELS = frozenset({*(o.value for o in OutcomeKind), OTHER})
CLASSIFICATION_LABELS = frozenset({*(c.value for c in DisconnectClass), OTHER})
RECOVERY_RESULTS = ("started", "succeeded", "failed")
PEERS = ("agent", "viewer")
DIRECTIONS = ("in", "out")
# Why a connection was closed at accept (vm_agent.server.admission.Refusal values).
REFUSAL_REASONS = ("rate", "total", "address", "address_unauthenticated")
CONNECTION_STATES = ("authenticated", "unauthenticated")
CALLBACK_FAILURE_REASONS = frozenset(
    {"unauthorized", "forbidden", "server_error", "network", OTHER}
)


def _bounded(value: object, allowed: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


class _SessionsCollector(Collector):
    """`vm_agent_sessions{state}`, read from the daemon at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None
        self._failed_once = False

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily("vm_agent_sessions", "Sessions by state", labels=["state"])]

    def collect(self) -> Iterable[Metric]:
        counts: Mapping[str, int] = {}
        if self.source is not None:
            try:
                counts = self.source()
            except Exception:
                # A scrape must not fail the daemon; say so once, then stay quiet.
                if not self._failed_once:
                    log.exception("session count source failed; reporting no sessions")
                    self._failed_once = True
                counts = {}
        family = GaugeMetricFamily("vm_agent_sessions", "Sessions by state", labels=["state"])
        for state in SessionState:
            family.add_metric([state.value], float(counts.get(state.value, 0)))
        return [family]


class Metrics:
    """The daemon's metrics; `render()` gives the /metrics response."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.prompts_total = Counter(
            "vm_agent_prompts", "Prompts finished, by outcome", ["outcome"], registry=r
        )
        self.disconnects_total = Counter(
            "vm_agent_disconnects",
            "Agent processes gone, by classification",
            ["classification"],
            registry=r,
        )
        self.recoveries_total = Counter(
            "vm_agent_recoveries", "Session recoveries, by result", ["result"], registry=r
        )
        self.crash_reports_total = Counter(
            "vm_agent_crash_reports", "Crash reports written", registry=r
        )
        self.agent_restarts_total = Counter(
            "vm_agent_agent_restarts", "Agent processes started again for a session", registry=r
        )
        self.events_appended_total = Counter(
            "vm_agent_events_appended", "Events appended to the log, by type", ["type"], registry=r
        )
        self.viewers_connected = Gauge(
            "vm_agent_viewers_connected", "Websocket viewers connected", registry=r
        )
        self.viewer_overflows_total = Counter(
            "vm_agent_viewer_overflows", "Viewers closed because their queue overflowed", registry=r
        )
        self.jsonrpc_messages_total = Counter(
            "vm_agent_jsonrpc_messages",
            "JSON-RPC messages, by peer (agent|viewer) and direction (in|out)",
            ["peer", "direction"],
            registry=r,
        )
        self.ws_auth_failures_total = Counter(
            "vm_agent_ws_auth_failures", "Websocket authentications refused", registry=r
        )
        self.connections_refused_total = Counter(
            "vm_agent_connections_refused",
            "Connections closed at accept, by the cap they hit",
            ["reason"],
            registry=r,
        )
        self.connections_open = Gauge(
            "vm_agent_connections",
            "Open connections to the viewer port, by state",
            ["state"],
            registry=r,
        )
        self.connections_evicted_total = Counter(
            "vm_agent_connections_evicted",
            "Unauthenticated connections closed to let a newcomer in (the pool was full)",
            registry=r,
        )
        self.accept_errors_total = Counter(
            "vm_agent_accept_errors",
            "Accepts that failed for want of file descriptors",
            registry=r,
        )
        self.viewer_tokens_expired_total = Counter(
            "vm_agent_viewer_tokens_expired",
            "Viewers closed (4001) because their token expired",
            registry=r,
        )
        self.outbox_depth = Gauge(
            "vm_agent_outbox_depth", "Events not yet delivered to the control plane", registry=r
        )
        self.eventlog_bytes = Gauge(
            "vm_agent_eventlog_bytes", "Size of the event log on disk", registry=r
        )
        self.callback_failures_total = Counter(
            "vm_agent_callback_failures",
            "Failed calls to the control plane, by reason",
            ["reason"],
            registry=r,
        )
        self.callback_token_valid = Gauge(
            "vm_agent_callback_token_valid",
            "1 while the callback token is accepted by the control plane",
            registry=r,
        )
        self._sessions = _SessionsCollector()
        r.register(self._sessions)
        self._init_labels()
        # Label children cached: observe_events runs for every event appended.
        self._by_type = {t: self.events_appended_total.labels(type=t) for t in EVENT_TYPE_LABELS}

    def _init_labels(self) -> None:
        # Known label values exported at 0, so a rate() has a series from the start.
        for outcome in OUTCOME_LABELS:
            self.prompts_total.labels(outcome=outcome)
        for cls in CLASSIFICATION_LABELS:
            self.disconnects_total.labels(classification=cls)
        for result in RECOVERY_RESULTS:
            self.recoveries_total.labels(result=result)
        for peer in PEERS:
            for direction in DIRECTIONS:
                self.jsonrpc_messages_total.labels(peer=peer, direction=direction)
        for reason in CALLBACK_FAILURE_REASONS:
            self.callback_failures_total.labels(reason=reason)
        for refusal in REFUSAL_REASONS:
            self.connections_refused_total.labels(reason=refusal)
        for state in CONNECTION_STATES:
            self.connections_open.labels(state=state)

    def set_session_source(self, fn: Callable[[], Mapping[str, int]]) -> None:
        """`fn()` -> {state: count}, called at each scrape (states missing count 0)."""
        self._sessions.source = fn

    def set_eventlog_size_source(self, fn: Callable[[], float]) -> None:
        """`fn()` -> the event log's size in bytes, called at each scrape."""
        failed_once = False

        def read() -> float:
            nonlocal failed_once
            try:
                return float(fn())
            except Exception:
                if not failed_once:
                    log.exception("event log size source failed; reporting NaN")
                    failed_once = True
                return float("nan")

        self.eventlog_bytes.set_function(read)

    def set_connection_source(self, fn: Callable[[], tuple[int, int]]) -> None:
        """`fn()` -> (open connections, of which unauthenticated), read at each scrape."""
        self.connections_open.labels(state="authenticated").set_function(
            lambda: float(fn()[0] - fn()[1])
        )
        self.connections_open.labels(state="unauthenticated").set_function(lambda: float(fn()[1]))

    def connection_refused(self, reason: str) -> None:
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"refusal reason out of range: {reason!r}")
        self.connections_refused_total.labels(reason=reason).inc()

    def callback_failure(self, reason: str) -> None:
        """Count a failed control-plane call; an unknown reason counts as "other"."""
        self.callback_failures_total.labels(reason=_bounded(reason, CALLBACK_FAILURE_REASONS)).inc()

    def jsonrpc_message(self, peer: str, direction: str, count: int = 1) -> None:
        if peer not in PEERS or direction not in DIRECTIONS:
            raise ValueError(f"peer/direction out of range: {peer!r}/{direction!r}")
        self.jsonrpc_messages_total.labels(peer=peer, direction=direction).inc(count)

    def observe_events(self, events: Sequence[Event]) -> None:
        """Derive the counters from committed events (usable as an EventLog listener)."""
        for event in events:
            child = self._by_type.get(event.type) or self._by_type[OTHER]
            child.inc()
            if event.type == "prompt.finished":
                data = _data(event)
                self.prompts_total.labels(
                    outcome=_bounded(data.get("outcome"), OUTCOME_LABELS)
                ).inc()
            elif event.type == "agent.crash_report":
                self._crash_report(_data(event))
            elif (
                event.type == "session.state"
                and _data(event).get("state") == SessionState.RECOVERING.value
            ):
                self.recoveries_total.labels(result="started").inc()
                self.agent_restarts_total.inc()

    def _crash_report(self, data: Mapping[str, Any]) -> None:
        self.crash_reports_total.inc()
        cls = _bounded(data.get("classification"), CLASSIFICATION_LABELS)
        self.disconnects_total.labels(classification=cls).inc()
        if data.get("recovered") is True:
            self.recoveries_total.labels(result="succeeded").inc()
        elif data.get("recovery_error") is not None:
            # A recovery was tried (the disconnect looked resumable) and failed.
            self.recoveries_total.labels(result="failed").inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _data(event: Event) -> Mapping[str, Any]:
    """The event's `data` object ({} for anything unexpected: metrics never raise)."""
    try:
        data = json.loads(event.payload).get("data")
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}
