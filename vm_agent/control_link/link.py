"""The daemon's link to the control plane: ready, heartbeats, the outbox, agent credentials.

`run` starts the outbox sender, reports `ready` (retried until it lands) and then sends a
heartbeat every interval. The control plane's answer may change the interval and carry a
refreshed callback token, which replaces the file. A 401/403 is said once (log, metric,
`status()`), sessions keep running and the outbox keeps growing on disk; calls are tried
again at the heartbeat interval (after re-reading the token file, where an operator may
have put a new token), never in a hot loop.

Wiring (a session keeps the credentials provider it was created with)::

    link = ControlLink(settings, log, supervisor, tokens, redactor=redactor, metrics=metrics)
    supervisor.credentials = link.credentials_provider
    await tg.start(link.run)
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx
from anyio.abc import TaskStatus

from vm_agent import __version__
from vm_agent.common.redact import Redactor
from vm_agent.control_link.activity import drained, session_activity
from vm_agent.control_link.client import (
    CallbackError,
    CallbackForbidden,
    CallbackUnauthorized,
    ControlPlaneClient,
    RetryPolicy,
)
from vm_agent.control_link.health import LinkHealth, LinkMetrics
from vm_agent.control_link.outbox import OutboxSender, backoff_delay
from vm_agent.control_link.renewal import CertificateRenewer
from vm_agent.control_link.token import CallbackTokenStore
from vm_agent.control_link.usage import node_usage
from vm_agent.eventlog import EventLog
from vm_agent.process.catalog import AgentSpec
from vm_agent.runtime.settings import Settings
from vm_agent.session.start_policy import Recorded
from vm_agent.session.supervisor import Supervisor

log = logging.getLogger("vm_agent.control_link")


@dataclass(frozen=True, slots=True)
class LinkTimings:
    """Retry, backoff and batch bounds (tests shorten them)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ready_backoff_initial_s: float = 1.0
    outbox_backoff_initial_s: float = 1.0
    outbox_backoff_max_s: float = 30.0
    outbox_idle_wait_s: float = 30.0
    outbox_batch_max_events: int = 500
    outbox_batch_max_bytes: int = 1024 * 1024
    # The control plane's interval is clamped to these bounds.
    min_interval_s: float = 1.0
    max_interval_s: float = 3600.0


class ControlLink:
    def __init__(
        self,
        settings: Settings,
        log: EventLog,
        supervisor: Supervisor | None,
        tokens: CallbackTokenStore,
        *,
        redactor: Redactor,
        metrics: LinkMetrics | None = None,
        http: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
        timings: LinkTimings | None = None,
        version: str = __version__,
        capacity: Mapping[str, Any] | None = None,
        tls_context: ssl.SSLContext | None = None,
        terminals: Callable[[str], int] | None = None,
    ) -> None:
        """``terminals``: how many people's terminals a session has open (the viewer
        server's registry, wired by the daemon)."""
        if not settings.control_plane_url:
            raise ValueError("ControlLink needs settings.control_plane_url")
        self.settings = settings
        self.supervisor = supervisor
        self.tokens = tokens
        self.redactor = redactor
        self.timings = timings or LinkTimings()
        self.version = version
        self.terminals = terminals or (lambda _sid: 0)
        self.drained_reported = False
        self.capacity = dict(capacity) if capacity is not None else None
        self.interval_s = float(settings.heartbeat_interval_s)
        self.health = LinkHealth(metrics)
        self.client = ControlPlaneClient(
            settings.control_plane_url,
            settings.node_id,
            tokens,
            http=http,
            verify=verify,
            metrics=metrics,
            retry=self.timings.retry,
            health=self.health,
        )
        self.outbox = OutboxSender(
            log,
            self.client,
            backoff_initial_s=self.timings.outbox_backoff_initial_s,
            backoff_max_s=self.timings.outbox_backoff_max_s,
            idle_wait_s=self.timings.outbox_idle_wait_s,
            batch_max_events=self.timings.outbox_batch_max_events,
            batch_max_bytes=self.timings.outbox_batch_max_bytes,
            auth_retry_s=lambda: self.interval_s,
            metrics=metrics,
        )
        # The listener's certificate, renewed through the control plane when it signed it.
        self.renewer: CertificateRenewer | None = None
        if settings.tls_renew and tls_context is not None:
            assert settings.tls_cert_file is not None and settings.tls_key_file is not None
            self.renewer = CertificateRenewer(
                self.client,
                node_id=settings.node_id,
                cert_file=settings.tls_cert_file,
                key_file=settings.tls_key_file,
                context=tls_context,
            )
        self.ready_sent = False
        self.last_heartbeat: float | None = None  # monotonic
        self.heartbeats = 0
        self.token_refreshes = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled. Started at once: a control plane that is down never delays the
        daemon's start."""
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.outbox.run)
                if self.renewer is not None:
                    tg.start_soon(self.renewer.run)
                task_status.started()
                await self._announce()
                while True:
                    await self.heartbeat_once()
                    await anyio.sleep(self.interval_s)
        finally:
            with anyio.CancelScope(shield=True):
                await self.client.aclose()

    async def credentials_provider(self, session_id: str, spec: AgentSpec) -> dict[str, str]:
        """A `CredentialsProvider`: the agent's declared credentials, fetched at spawn.

        Only the names the catalog declares for the agent (`spec.credentials` and
        `spec.optional_credentials`) are passed on; the values go to that agent's
        environment only (never to disk) and are known to the redactor from here on. A
        missing required name is warned about. Raises `CallbackError` when they cannot be
        fetched.
        """
        env, owner = await self.client.agent_credentials(session_id, spec.name)
        for value in env.values():
            self.redactor.add_secret(value)
        # Before the values reach an agent: a user's session must be the one the control
        # plane made for that user (a session restored from an older log could say
        # otherwise). A session without an owner is the node scope's, the control plane's.
        self._check_owner(session_id, owner)
        wanted = set(spec.credential_names)
        if extra := sorted(set(env) - wanted):
            log.warning(
                "session %s: ignoring credentials the catalog does not declare for %s: %s",
                session_id,
                spec.name,
                ", ".join(extra),
            )
        if missing := sorted(set(spec.credentials) - set(env)):
            log.warning(
                "session %s: the control plane has no %s for agent %s",
                session_id,
                ", ".join(missing),
                spec.name,
            )
        return {k: v for k, v in env.items() if k in wanted}

    def _check_owner(self, session_id: str, owner: str | None) -> None:
        running = self.supervisor.sessions.get(session_id) if self.supervisor else None
        theirs = running.owner if running is not None else None
        if theirs is not None and owner is not None and theirs != owner:
            raise CallbackError(
                f"session {session_id}: the control plane made it for another user "
                "than the one it runs for here; its credentials are not used"
            )

    async def mcp_secrets_provider(self, session_id: str) -> dict[str, str]:
        """A `McpSecretsProvider`: the secrets the session's MCP servers name, fetched at
        each spawn, into the agent's `session/new` only (never to disk), and known to the
        redactor from here on. Raises `CallbackError` when they cannot be fetched."""
        values, owner = await self.client.mcp_secrets(session_id)
        for value in values.values():
            self.redactor.add_secret(value)
        self._check_owner(session_id, owner)
        return values

    async def session_details(self, session_id: str, agent: str) -> Recorded | None:
        """A `SessionDetailsProvider`: what the control plane recorded for ``session_id``
        (None when it made no such session); raises `CallbackError` when it cannot say."""
        answer = await self.client.session_details(session_id)
        if answer is None:
            return None
        return Recorded(
            session_id=session_id,
            agent=answer["agent"],
            owner=answer["owner"],
            reservation=answer.get("reservation"),
            ended=answer.get("endedAt") is not None,
        )

    def status(self) -> dict[str, Any]:
        """For /health: no secrets, only states, ages and counts."""
        now = time.monotonic()
        expires = self.tokens.expires_in_s()
        cert_left = None if self.renewer is None else self.renewer.expires_in_s()
        return {
            "control_plane": self.health.state.value,
            "detail": self.health.detail,
            "ready_sent": self.ready_sent,
            "last_heartbeat_age_s": (
                None if self.last_heartbeat is None else round(now - self.last_heartbeat, 1)
            ),
            "heartbeat_interval_s": self.interval_s,
            "outbox_depth": self.outbox.depth,
            "outbox_delivered": self.outbox.delivered,
            "token_expires_in_s": None if expires is None else round(expires),
            "certificate_expires_in_s": (None if cert_left is None else round(cert_left)),
            "certificate_renewals": None if self.renewer is None else self.renewer.renewals,
            "draining": self.draining,
        }

    async def heartbeat_once(self) -> None:
        """One heartbeat; failures are recorded in `health` (and logged once), not raised."""
        sessions = self._sessions()
        usage = await anyio.to_thread.run_sync(node_usage, self.settings.state_dir)
        running = list(self.supervisor.sessions.values()) if self.supervisor else []
        # Reads the sessions' cgroup.procs files: in a worker thread.
        activity = await anyio.to_thread.run_sync(session_activity, running, self.terminals)
        if self.supervisor is not None and self.supervisor.draining:
            # Set before it is said, and checked again with no await since the reading: no
            # prompt may start between the report and the delete.
            self.supervisor.drained = True
            now_running = list(self.supervisor.sessions.values())
            self.supervisor.drained = drained(now_running, activity)
        is_drained = self.supervisor is not None and self.supervisor.drained
        try:
            answer = await self.client.heartbeat(
                sessions, usage, activity.report(), drained=is_drained
            )
        except (CallbackUnauthorized, CallbackForbidden):
            await self._reload_token()
            return
        except CallbackError as exc:
            log.debug("heartbeat failed: %s", exc)
            return
        self.last_heartbeat = time.monotonic()
        self.heartbeats += 1
        if is_drained and not self.drained_reported:
            self.drained_reported = True
            log.info("control plane: reported drained (no session runs)")
        if answer.drain and self.supervisor is not None and not self.supervisor.draining:
            # One way: the control plane never takes a drain back (the node is deleted).
            self.supervisor.draining = True
            log.warning("control plane: this node drains; new sessions are refused")
        if answer.interval_s is not None:
            t = self.timings
            self.interval_s = min(max(answer.interval_s, t.min_interval_s), t.max_interval_s)
        if answer.token is not None and answer.token != self.tokens.value:
            await self._store_refreshed(answer.token)

    @property
    def draining(self) -> bool:
        return self.supervisor is not None and self.supervisor.draining

    # Internals.

    async def _announce(self) -> None:
        capacity = self.capacity if self.capacity is not None else self._capacity()
        failures = 0
        while True:
            try:
                await self.client.ready(self.version, capacity)
            except (CallbackUnauthorized, CallbackForbidden):
                if not await self._reload_token():
                    await anyio.sleep(self.interval_s)
                continue
            except CallbackError as exc:
                failures += 1
                log.debug("ready not delivered (%s)", exc)
                initial = self.timings.ready_backoff_initial_s
                await anyio.sleep(backoff_delay(failures, initial, self.interval_s))
                continue
            self.ready_sent = True
            log.info("control plane: ready reported (node %s)", self.settings.node_id)
            return

    async def _reload_token(self) -> bool:
        """Re-read the token file after a 401/403; True when it holds a new token."""
        try:
            changed = await anyio.to_thread.run_sync(self.tokens.reload)
        except OSError as exc:
            log.error("cannot re-read the callback token file: %s", exc)
            return False
        if changed:
            log.warning("callback token file holds a new token; using it")
            self.outbox.token_changed()
        return changed

    async def _store_refreshed(self, token: str) -> None:
        try:
            await anyio.to_thread.run_sync(self.tokens.replace, token)
        except (OSError, ValueError) as exc:
            log.error("refreshed callback token not written to its file (%s); using it", exc)
        self.token_refreshes += 1
        expires = self.tokens.expires_in_s()
        log.info(
            "callback token refreshed%s",
            "" if expires is None else f" (expires in {expires:.0f}s)",
        )
        self.outbox.token_changed()

    def _sessions(self) -> list[dict[str, Any]]:
        if self.supervisor is None:
            return []
        return [
            {"session_id": d["session_id"], "state": d["state"], "agent": d["agent"]}
            for d in self.supervisor.describe_all()
        ]

    def _capacity(self) -> dict[str, Any]:
        usage = node_usage(self.settings.state_dir)
        capacity: dict[str, Any] = {"cpus": os.cpu_count() or 1}
        for key in ("mem_total_bytes", "disk_total_bytes"):
            if key in usage:
                capacity[key] = usage[key]
        if self.supervisor is not None:
            capacity["agents"] = self.supervisor.catalog.names()
        return capacity
