"""The daemon process (`vm-agent serve`): assembles the parts and owns their lifetimes.

One task tree: the signal watcher and the systemd watchdog beside the daemon proper, which
holds the event log open around the supervisor, the control-plane link and the viewer
server. Shutdown walks the tree from the outside in: stop accepting, tell viewers, stop
every agent process group within a bound, cancel the rest, and let the log commit and close.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio

from vm_agent import __version__
from vm_agent.common.exc import first_leaf
from vm_agent.common.redact import Redactor
from vm_agent.containment.host import (
    Containment,
    ContainmentStartError,
)
from vm_agent.control_link import (
    CallbackTokenStore,
    ControlLink,
    TokenFileError,
)
from vm_agent.control_link import bootstrap as first_start
from vm_agent.control_link.trust import TrustError, control_plane_verify
from vm_agent.daemon.agents_check import warn_unrunnable_agents
from vm_agent.daemon.assembly import (
    StartupError,
    containment_config,
    load_callback_tokens,
    load_tls,
    session_config,
    start_policy,
)
from vm_agent.daemon.git_wiring import GitWiring, wire_git
from vm_agent.daemon.stopper import Stopper
from vm_agent.edge.auth import JwksVerifier
from vm_agent.eventlog import EventLog
from vm_agent.ports.watch import PortWatch
from vm_agent.process.catalog import Catalog, CatalogError
from vm_agent.runtime.fdlimit import raise_soft_limit
from vm_agent.runtime.logs import setup_logging
from vm_agent.runtime.metrics import Metrics
from vm_agent.runtime.sdnotify import SdNotifier
from vm_agent.runtime.settings import Settings
from vm_agent.server import ViewerServer
from vm_agent.server.terminal_methods import registry_of
from vm_agent.session.supervisor import Supervisor
from vm_agent.terminals.orphans import close_orphans

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
SHUTDOWN_REASON = "daemon shutting down"
# Telling viewers is a courtesy: it never holds up stopping the agents for long.
_CLOSE_VIEWERS_WITHIN_S = 5.0
_STATUS_EVERY_S = 15.0


@dataclass(frozen=True, slots=True)
class DaemonReady:
    """What the daemon tells its caller once it serves (`vm-agent dev` prints it)."""

    host: str
    port: int
    node_id: str
    sessions: int
    tls: bool = False

    @property
    def viewer_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}/v1/ws"


OnReady = Callable[[DaemonReady], None]


async def run_daemon(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    on_ready: OnReady | None = None,
    stopper: Stopper | None = None,
    ensure_agent_users: bool = False,
) -> int:
    """Runs the daemon until SIGTERM/SIGINT; returns the process exit status.

    A caller that gives `stopper` runs its `watch` itself, from before this call;
    `ensure_agent_users` creates the pool's users first (`vm-agent dev` as root).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    redactor = Redactor()
    setup_logging(settings.log_format, redactor)
    # One line per callback request is noise at INFO; failures are logged by the link.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        catalog = Catalog.load(settings.agents_file)
        if settings.jwks_url is None:
            raise StartupError("VM_AGENT_JWKS_URL is required to verify viewers' tokens")
        if settings.issuer is None:
            raise StartupError("VM_AGENT_JWT_ISSUER (or VM_AGENT_CONTROL_PLANE_URL) is required")
        plan = first_start.start_plan(settings)
        exchange = plan is first_start.StartPlan.EXCHANGE
        tokens = None if exchange else load_callback_tokens(settings, redactor)
        verify = control_plane_verify(settings.control_plane_ca_file)
    except CatalogError as exc:
        print(f"vm-agent: VM_AGENT_AGENTS_FILE: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except (StartupError, first_start.BootstrapRefused, TrustError) as exc:
        print(f"vm-agent: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    raise_soft_limit(settings.max_connections)
    notifier = SdNotifier.from_env(dict(environ))
    stop = stopper or Stopper()
    parts = _Parts(
        settings=settings,
        environ=environ,
        redactor=redactor,
        catalog=catalog,
        tokens=tokens,
        notifier=notifier,
        stop=stop,
        on_ready=on_ready,
        ensure_agent_users=ensure_agent_users,
        verify=verify,
    )
    try:
        async with anyio.create_task_group() as tg:
            if stopper is None:
                await tg.start(stop.watch)
            tg.start_soon(notifier.watchdog_loop)
            if exchange:
                parts.tokens = await first_start.exchange_unless_stopped(
                    settings, notifier, redactor, stop.requested, verify
                )
                if parts.tokens is None:
                    log.info("stopped before the bootstrap finished")
                    tg.cancel_scope.cancel()
                    return EXIT_OK
            await parts.run()
            tg.cancel_scope.cancel()
    except Exception as exc:
        leaf = first_leaf(exc)
        if isinstance(leaf, ContainmentStartError | StartupError):
            # Found once running (the agent-user pool, the TLS files): one line, exit 2.
            print(f"vm-agent: {leaf}", file=sys.stderr, flush=True)
            notifier.status(f"failed: {leaf}")
            return EXIT_CONFIG
        if isinstance(leaf, first_start.BootstrapRefused | TokenFileError):
            # Starting again cannot help: said once, and the unit does not restart on 2.
            log.error("bootstrap failed: %s", leaf)
            notifier.status(f"failed: bootstrap: {leaf}")
            print(f"vm-agent: bootstrap failed: {leaf}", file=sys.stderr, flush=True)
            return EXIT_CONFIG
        # An OSError (a port in use, a state dir it may not write) says all in one line.
        trace = None if isinstance(leaf, OSError) else leaf
        log.error("the daemon stopped on an error: %s", leaf, exc_info=trace)
        notifier.status(f"failed: {leaf}")
        return EXIT_FAILED
    finally:
        notifier.close()
    log.info("stopped")
    return EXIT_OK


class _Parts:
    """The daemon proper: built in `run`, in dependency order, inside the event log."""

    def __init__(
        self,
        *,
        settings: Settings,
        environ: Mapping[str, str],
        redactor: Redactor,
        catalog: Catalog,
        tokens: CallbackTokenStore | None,
        notifier: SdNotifier,
        stop: Stopper,
        on_ready: OnReady | None,
        ensure_agent_users: bool = False,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.ensure_agent_users = ensure_agent_users
        self.verify = verify  # the control plane's trust (control_link/trust.py)
        self.settings = settings
        self.environ = environ
        self.redactor = redactor
        self.catalog = catalog
        self.tokens = tokens
        self.tls: ssl.SSLContext | None = None
        self.notifier = notifier
        self.stop = stop
        self.on_ready = on_ready

    async def run(self) -> None:
        s = self.settings
        # Here, not with the other settings: on a node's first start the bootstrap writes
        # the key and certificate just before this (docs/provisioning.md).
        self.tls = load_tls(s)
        s.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        assert s.jwks_url is not None and s.issuer is not None  # checked before
        verifier = JwksVerifier(
            jwks_url=s.jwks_url, issuer=s.issuer, node_id=s.node_id, verify=self.verify
        )
        containment = Containment.start(
            containment_config(s, self.environ), ensure_pool=self.ensure_agent_users
        )
        self.stop.containment = containment
        warn_unrunnable_agents(self.catalog, containment, self.environ)
        try:
            async with EventLog.open(
                s.event_log_path, retention_bytes_per_session=s.retention_bytes_per_session
            ) as events:
                await self._serve(events, verifier, containment)
                await events.flush()
        finally:
            containment.close()
            with anyio.CancelScope(shield=True):
                await verifier.aclose()

    async def _serve(
        self, events: EventLog, verifier: JwksVerifier, containment: Containment
    ) -> None:
        s = self.settings
        metrics = Metrics()
        remove_listener = events.add_listener(metrics.observe_events)
        metrics.set_eventlog_size_source(events.size_bytes)
        supervisor = Supervisor(
            log=events,
            catalog=self.catalog,
            config=session_config(s, self.environ),
            redactor=self.redactor,
            containment=containment,
            policy=start_policy(s),
        )
        self.stop.supervisor = supervisor
        metrics.set_session_source(
            lambda: Counter(x.state.value for x in supervisor.sessions.values())
        )
        link: ControlLink | None = None
        git: GitWiring | None = None  # a task's repository needs the control plane's tokens
        if self.tokens is not None:
            link = ControlLink(
                s,
                events,
                supervisor,
                self.tokens,
                redactor=self.redactor,
                metrics=metrics,
                verify=self.verify,
                tls_context=self.tls,
                # people's terminals are the viewer server's: counted in the heartbeat
                terminals=lambda sid: len(registry_of(supervisor).of(sid)),
            )
            # Set before any session exists: a session keeps the provider it was made with.
            supervisor.credentials = link.credentials_provider
            supervisor.session_details = link.session_details
            supervisor.config = dataclasses.replace(
                supervisor.config, mcp_secrets=link.mcp_secrets_provider
            )
            git = wire_git(
                socket_path=s.git_credential_socket_path,
                state_dir=s.state_dir,
                supervisor=supervisor,
                client=link.client,
                redactor=self.redactor,
                containment=containment,
            )
        server = ViewerServer(
            settings=s,
            supervisor=supervisor,
            log=events,
            verifier=verifier,
            metrics=metrics,
            health=partial(_health, link),
            ssl_context=self.tls,
        )
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                restored = await supervisor.restore(recover=s.recover_on_start)
                if restored:
                    log.info("restored %d sessions from the event log", len(restored))
                # People's terminals ended with the last daemon: the log says so now.
                if orphans := await close_orphans(events):
                    log.info("closed %d terminals the last daemon left open", len(orphans))
                # The ports the sessions' processes listen on, as ports.changed events.
                port_watch = PortWatch(
                    lambda: [(x.id, x.containment) for x in supervisor.sessions.values()], events
                )
                tg.start_soon(port_watch.run)
                if link is not None:
                    await tg.start(link.run)
                if git is not None:
                    await tg.start(git.broker.serve)
                port = await tg.start(partial(server.serve, s.listen_host, s.listen_port))
                ready = DaemonReady(
                    s.listen_host,
                    int(port),
                    s.node_id,
                    len(supervisor.sessions),
                    tls=self.tls is not None,
                )
                log.info("vm-agent %s serving viewers on %s", __version__, ready.viewer_url)
                self.notifier.ready()
                self.notifier.status(
                    f"serving on {s.listen_host}:{ready.port}; {ready.sessions} sessions"
                )
                if self.on_ready is not None:
                    self.on_ready(ready)
                tg.start_soon(self._status_loop, supervisor, server, ready.port)
                await self.stop.requested.wait()
                await self._shut_down(server, supervisor)
                tg.cancel_scope.cancel()
        finally:
            remove_listener()

    async def _status_loop(self, supervisor: Supervisor, server: ViewerServer, port: int) -> None:
        # `systemctl status` shows this line; refreshed, since sessions come and go.
        if not self.notifier.enabled:
            return
        while True:
            await anyio.sleep(_STATUS_EVERY_S)
            states = Counter(x.state.value for x in supervisor.sessions.values())
            summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
            self.notifier.status(
                f"serving on {self.settings.listen_host}:{port}; sessions: {summary}; "
                f"viewers: {server.viewer_count}"
            )

    async def _shut_down(self, server: ViewerServer, supervisor: Supervisor) -> None:
        s = self.settings
        self.notifier.stopping()
        self.notifier.status("stopping: closing viewers and stopping agents")
        server.stop_accepting()
        with anyio.move_on_after(_CLOSE_VIEWERS_WITHIN_S):
            await server.close_viewers(code=1001, reason=SHUTDOWN_REASON)
        running = sum(1 for x in supervisor.sessions.values() if x.agent_pid is not None)
        log.info("stopping %d agent processes (within %.0fs)", running, s.shutdown_timeout_s)
        await supervisor.shutdown(s.shutdown_timeout_s)


def _health(link: ControlLink | None) -> dict[str, Any]:
    # The server reports sessions, viewers and uptime itself; the link is ours to add.
    return {"control_plane": link.status() if link is not None else {"state": "disabled"}}
