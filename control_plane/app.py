"""The control plane's ASGI app, and serving it with uvicorn inside an anyio task group."""

from __future__ import annotations

import contextlib
import errno
import math
import socket
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.api import (
    admin,
    artifacts,
    callbacks,
    defaults,
    git_tokens,
    github,
    keys,
    nodes,
    providers,
    sessions,
    task_asks,
    task_connection,
    task_events,
    task_nodes,
    task_settings,
    tasks,
    usage,
    user_secrets,
)
from control_plane.api.common import (
    ApiError,
    RefuseControlCharacters,
    api_error_handler,
    plane_of,
)
from control_plane.dispatch import addresses
from control_plane.dispatch.loop import Dispatcher, DispatchSettings
from control_plane.dispatch.node_boot import BootKit
from control_plane.dispatch.nodes import NodeLifecycle, NodeSettings
from control_plane.github.delivery import delivery_from_settings
from control_plane.identity.keys import Clock
from control_plane.identity.node_certs import certificate_on_record_refusal
from control_plane.identity.tokens import jwks_url
from control_plane.nodes_link.links import NodeLinks
from control_plane.plane import ControlPlane
from control_plane.providers import dev
from control_plane.providers.base import node_labels
from control_plane.providers.qemu.driver import QemuSettings
from control_plane.providers.registry import (
    DriverFactory,
    HetznerSettings,
    default_drivers,
    plane_id,
    with_dev_node,
)
from control_plane.provisioning.artifacts.manifest import Manifest, load_manifest
from control_plane.serving import guarded_h11, uvicorn_log_config, uvicorn_serving
from control_plane.settings import ControlPlaneSettings
from control_plane.storage import machines
from control_plane.storage.db import make_engine, sqlite_url


async def _jwks(request: Request) -> JSONResponse:
    # Short cache: verifiers pick up a rotated key well before it starts signing.
    return JSONResponse(
        plane_of(request).tokens.keys.jwks(), headers={"Cache-Control": "public, max-age=60"}
    )


async def _health(_request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def create_app(
    settings: ControlPlaneSettings,
    *,
    plane: ControlPlane | None = None,
    clock: Clock = time.time,
    dispatch: DispatchSettings | None = None,
    node_settings: NodeSettings | None = None,
    drivers: DriverFactory | None = None,
    qemu: QemuSettings | None = None,
) -> Starlette:
    """The app; opens the control plane (migrations, keys) unless one is given.

    `app.state.plane` is the ControlPlane: its `tokens` mint tokens. `dispatch` configures
    the dispatcher that serving runs beside the app (default: CONTROL_PLANE_DISPATCH_*).
    """
    plane = plane or ControlPlane.open(settings, clock=clock)
    routes = [
        Route("/.well-known/jwks.json", _jwks, methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
        *callbacks.routes,
        *admin.routes,
        *keys.routes,
        *defaults.routes,
        *tasks.routes,
        *task_events.routes,
        *task_connection.routes,
        *task_asks.routes,
        *task_settings.routes,
        *task_nodes.routes,
        *usage.routes,
        *user_secrets.routes,
        *sessions.routes,
        *github.routes,
        *git_tokens.routes,
        *nodes.routes,
        *artifacts.routes,
        *providers.routes,
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: api_error_handler},
        middleware=[Middleware(RefuseControlCharacters)],
    )
    app.state.plane = plane
    app.state.dispatch_settings = dispatch or DispatchSettings()
    app.state.node_settings = node_settings or NodeSettings()
    app.state.drivers = drivers  # None: the providers' own drivers (registry)
    app.state.qemu_settings = qemu  # None: CONTROL_PLANE_QEMU_* when the loop starts
    app.state.node_lifecycle = None
    app.state.dispatcher = None
    return app


@contextlib.asynccontextmanager
async def dispatching(app: Starlette) -> AsyncIterator[Dispatcher | None]:
    """The dispatcher and its node connections, in a task group of their own, while the
    block runs (`app.state.dispatcher`); nothing when dispatch is off."""
    settings: DispatchSettings = app.state.dispatch_settings
    if not settings.enabled:
        yield None
        return
    plane = plane_of_app(app)

    def token_for(node_id: str) -> str:
        # The control plane's own connection: every session of that node.
        return plane.tokens.mint_viewer_token(node_id, ["node"], subject="control-plane")

    async with anyio.create_task_group() as tg:
        # Lazily: the node CA is read (or made) only when a node is reached over TLS. Over
        # TLS only the certificate on record is accepted (an earlier or stolen one is not).
        links = NodeLinks(
            tg,
            token_for,
            lambda: plane.node_ca.certificate_pem(),  # noqa: PLW0108
            peer_check=partial(certificate_on_record_refusal, plane.engine),
        )
        dispatcher = Dispatcher(
            plane.engine,
            links,
            plane.clock,
            settings,
            node_domain=plane.settings.node_domain,
            github=delivery_from_settings(plane.settings, plane.clock),
        )
        tg.start_soon(dispatcher.run)
        app.state.dispatcher = dispatcher
        try:
            yield dispatcher
        finally:
            app.state.dispatcher = None
            tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def node_lifecycle(app: Starlette) -> AsyncIterator[NodeLifecycle | None]:
    """The node lifecycle loop (control_plane/dispatch/nodes.py) while the block runs:
    placement's asks become VMs at their provider, idle ones are reaped."""
    settings: NodeSettings = app.state.node_settings
    if not settings.enabled:
        yield None
        return
    plane = plane_of_app(app)
    s = plane.settings

    def manifest() -> Manifest:
        return load_manifest(s.artifacts_path)

    hetzner = HetznerSettings()
    qemu: QemuSettings = app.state.qemu_settings or QemuSettings()
    kit = BootKit(
        public_url=s.public_url,
        jwks_url=jwks_url(s.public_url),
        manifest=manifest,
        ca_certificate=None if s.user_data_ca_file is None else s.user_data_ca_file.read_text(),
        # lazily: the node CA is read (or made) only when a node is made
        dns_name=lambda node_id: plane.node_ca.dns_name(node_id),  # noqa: PLW0108
        bootstrap_ttl_s=s.bootstrap_token_ttl_s,
    )
    lifecycle = NodeLifecycle(
        plane.engine,
        plane.sealer,
        kit,
        plane_id(s.public_url),
        app.state.drivers or default_drivers(hetzner, qemu),
        settings=settings,
        hetzner=hetzner,
        qemu=qemu,
        clock=plane.clock,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(lifecycle.run)
        app.state.node_lifecycle = lifecycle
        try:
            yield lifecycle
        finally:
            app.state.node_lifecycle = None
            tg.cancel_scope.cancel()


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; bind first to learn the port (for `public_url`), then serve on it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, f"control plane: {host}:{port} is in use") from exc
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_control_plane(
    settings: ControlPlaneSettings,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    app: Starlette | None = None,
    sock: socket.socket | None = None,
) -> AsyncIterator[str]:
    """Serve the control plane until the block exits; yields its base URL.

    Port 0 picks a free port. Pass `app` to reach its state (tokens, database) or to
    serve the same app again after a stop (a restart); an app made here is closed here.
    Pass `sock` (from bind_socket) to serve on a port chosen before the settings were
    made; host and port are then ignored. The socket is closed when the block exits.
    """
    own_app = app is None
    served = app if app is not None else create_app(settings)
    sock = sock if sock is not None else bind_socket(host, port)
    host, bound_port = sock.getsockname()[:2]
    tls = settings.tls_cert_file is not None and settings.tls_key_file is not None
    config = uvicorn.Config(
        served,
        log_level="warning",
        log_config=uvicorn_log_config(),  # one event a line, whatever a request holds
        lifespan="off",
        timeout_graceful_shutdown=5,
        # Slow clients: a deadline for each request head and a cap on connections.
        # (Not uvicorn's limit_concurrency: it answers 503 to everyone while slow clients
        # hold the connections, where this closes the slowest.)
        http=guarded_h11(settings.header_timeout_s, settings.max_connections),
        # HTTPS when configured: a VM refuses a plain-http control plane off loopback.
        ssl_certfile=settings.tls_cert_file if tls else None,
        ssl_keyfile=settings.tls_key_file if tls else None,
    )
    try:
        async with (
            uvicorn_serving(config, [sock], "control plane server"),
            dispatching(served),
            node_lifecycle(served),
        ):
            url_host = f"[{host}]" if ":" in host else host
            yield f"{'https' if tls else 'http'}://{url_host}:{bound_port}"
    except BaseExceptionGroup as group:
        # The caller's own error (an assertion in a test, say) comes out as itself,
        # not wrapped in the groups of the task groups that ran beside it (the server's,
        # the dispatcher's).
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is not group:
            raise inner from None
        raise
    finally:
        sock.close()
        if own_app:
            plane_of_app(served).close()


def record_node_address(
    settings: ControlPlaneSettings, node_id: str, viewer_url: str, workspace_root: str
) -> None:
    """Where the dispatcher reaches `node_id` (`vm-agent dev` records its own daemon)."""
    engine = make_engine(settings.database_url or sqlite_url(settings.state_dir))
    try:
        addresses.record_address(engine, node_id, viewer_url, workspace_root, time.time())
    finally:
        engine.dispose()


def dev_app(settings: ControlPlaneSettings, state_file: Path) -> Starlette:
    """`vm-agent dev`'s control plane: the lifecycle knows the ``dev`` provider (its daemon,
    recorded in ``state_file``) and reaps that node by no timer unless one is set
    (CONTROL_PLANE_NODES_*): a dev daemon idle over lunch is still there after it."""
    nodes = NodeSettings()
    timers = ("ready_deadline_s", "warm_window_s", "lifetime_cap_s", "lost_after_s")
    never = {name: math.inf for name in timers if name not in nodes.model_fields_set}
    drivers = with_dev_node(default_drivers(HetznerSettings()), state_file)
    return create_app(settings, node_settings=nodes.model_copy(update=never), drivers=drivers)


def adopt_dev_node(settings: ControlPlaneSettings, node_id: str, state_file: Path) -> None:
    """The dev daemon, started: its labels recorded (the create, as the dev provider has
    it), then its lifecycle row, which finds it by those labels and adopts it."""
    dev.record(state_file, node_id, node_labels(plane_id(settings.public_url), node_id))
    engine = make_engine(settings.database_url or sqlite_url(settings.state_dir))
    try:
        machines.adopt_existing(engine, node_id, dev.NAME, "", time.time())
    finally:
        engine.dispose()


def plane_of_app(app: Starlette) -> ControlPlane:
    plane = app.state.plane
    assert isinstance(plane, ControlPlane)
    return plane
