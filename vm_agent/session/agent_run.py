"""One generation of a session's agent: spawn, open the ACP session, watch for the disconnect.

Each run reports to its session through ``RunReport`` callbacks with plain facts; the
session feeds them to its machine. Leaving a run always stops the process group.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio

from vm_agent.acp.client import AcpClient, AgentInfo, AgentProtocolError, ClientServices
from vm_agent.acp.fs import FileSystemService
from vm_agent.acp.terminals import TerminalManager
from vm_agent.containment.session import SessionContainment
from vm_agent.core.classifier import ExitFacts
from vm_agent.jsonrpc.connection import PeerClosed
from vm_agent.jsonrpc.errors import INVALID_PARAMS, JsonRpcError
from vm_agent.process.agent_env import build_agent_env
from vm_agent.process.agent_process import AgentProcess, AgentStartError, spawn_agent
from vm_agent.process.catalog import AgentSpec
from vm_agent.session import settings_plan
from vm_agent.session.config import CredentialsProvider, SessionConfig
from vm_agent.session.settings_plan import SettingRefused
from vm_agent.session.start_settings import StartSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long an agent may take over `session/close` before its process is stopped anyway.
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class StartFailure:
    message: str
    retryable: bool  # the process died or hung (try again) vs the agent refused (do not)
    stderr_tail: str = ""
    error_code: int | None = None  # the agent's JSON-RPC error, when it refused
    timed_out: bool = False  # the start deadline passed
    auth_methods: tuple[dict[str, Any], ...] = ()  # what `initialize` advertised, if it ran
    settings_refused: bool = False  # the agent cannot take a start setting (agentSettings)


class RunReport(Protocol):
    """What a run tells its session. Each method is awaited in order."""

    async def opened(
        self, run: AgentRun, info: AgentInfo, acp_session_id: str, loaded: bool
    ) -> None: ...
    async def failed(self, failure: StartFailure) -> None: ...
    async def disconnected(self, run: AgentRun, exit: ExitFacts) -> None: ...


UpdateSink = Callable[[Any], Awaitable[None] | None]
PermissionSink = Callable[[Any], Awaitable[dict[str, Any]]]


class AgentRun:
    """The live half of a session for as long as one agent process lives."""

    def __init__(
        self,
        session_id: str,
        spec: AgentSpec,
        cwd: Path,
        config: SessionConfig,
        on_spawned: Callable[[int], None] | None = None,
        *,
        containment: SessionContainment | None = None,
        settings: StartSettings | None = None,
    ) -> None:
        self.session_id = session_id
        self.settings = settings
        # The mode and option changes that gave this process the start settings.
        self.applied: list[settings_plan.Change] = []
        self.containment = containment
        self._on_spawned = on_spawned
        self.spec = spec
        self.cwd = cwd
        self.config = config
        self.client: AcpClient | None = None
        self.process: AgentProcess | None = None
        self.current_request: str | None = None
        self._stop = anyio.Event()
        self._close = False
        self.acp_session_id: str | None = None
        self.done = anyio.Event()
        self._mcp_secrets: Mapping[str, str] = {}

    def stop(self, *, close: bool = False) -> None:
        """Ask the run to stop its process (the disconnect is then reported as usual);
        ``close``: the session ends, so send ``session/close`` first where the agent can."""
        self._close = self._close or close
        self._stop.set()

    async def request(self, method: str, call: Awaitable[T]) -> T:
        """Tracks the method in flight, for the classifier and the crash report."""
        self.current_request = method
        try:
            result = await call
        except PeerClosed:
            raise  # it stays "in flight": the peer went away while we waited for it
        except BaseException:
            self._done_with(method)
            raise
        self._done_with(method)
        return result

    def _done_with(self, method: str) -> None:
        if self.current_request == method:
            self.current_request = None

    async def run(
        self,
        *,
        load_acp_session: str | None,
        report: RunReport,
        on_update: UpdateSink,
        on_permission: PermissionSink,
        credentials: CredentialsProvider | None,
    ) -> None:
        try:
            await self._run(load_acp_session, report, on_update, on_permission, credentials)
        finally:
            self.done.set()

    async def _run(
        self,
        load: str | None,
        report: RunReport,
        on_update: UpdateSink,
        on_permission: PermissionSink,
        credentials: CredentialsProvider | None,
    ) -> None:
        cfg = self.config
        own_env: dict[str, str] = dict(self.spec.env)
        # The start's own variables: after the catalog's, under the credentials (validated
        # never to name a credential or a variable the daemon sets).
        own_env.update(self.settings.env if self.settings else {})
        if self.settings and self.settings.model and self.spec.model_env:
            own_env[self.spec.model_env] = self.settings.model  # it has no model option
        try:
            if credentials is not None and self.spec.credential_names:
                own_env.update(await credentials(self.session_id, self.spec))
        except Exception as exc:
            log.warning("session %s: credentials unavailable: %s", self.session_id, exc)
            await report.failed(StartFailure(f"agent credentials unavailable: {exc}", True))
            return
        try:
            self._mcp_secrets = await self._fetch_mcp_secrets()
        except Exception as exc:
            log.warning("session %s: MCP secrets unavailable: %s", self.session_id, exc)
            await report.failed(StartFailure(f"MCP server secrets unavailable: {exc}", True))
            return
        base_env = build_agent_env(cfg.daemon_env, allowed=cfg.env_allow)
        env = build_agent_env(cfg.daemon_env, own_env, allowed=cfg.env_allow)
        contained = self.containment
        if contained is not None:  # the agent user's HOME and names, not the daemon's
            base_env, env = contained.env(base_env), contained.env(env)
        try:
            fs = FileSystemService(
                self.cwd,
                max_read_bytes=cfg.fs_max_bytes,
                max_write_bytes=cfg.fs_max_bytes,
                credentials=contained.file_credentials if contained else None,
            )
        except OSError as exc:
            await report.failed(StartFailure(f"cannot open {self.cwd}: {exc.strerror}", False))
            return
        try:
            async with (
                spawn_agent(
                    self.spec.command,
                    cwd=self.cwd,
                    env=env,
                    max_line_bytes=cfg.max_line_bytes,
                    tail_bytes=cfg.stderr_tail_bytes,
                    stop_timings=cfg.stop_timings,
                    launcher=contained,
                ) as proc,
                TerminalManager(
                    cwd=self.cwd,
                    base_env=base_env,  # terminals never get the agent's own secrets
                    default_output_limit=cfg.terminal_output_limit,
                    launcher=contained,
                ) as terminals,
            ):
                self.process = proc
                if self._on_spawned is not None:
                    self._on_spawned(proc.pid)
                services = ClientServices(
                    on_update=on_update,
                    request_permission=on_permission,
                    fs=fs,
                    terminals=terminals,
                )
                client = AcpClient(
                    proc.transport,
                    services,
                    name=f"session {self.session_id} agent pid {proc.pid}",
                    max_heavy_requests=cfg.max_heavy_requests,
                )
                async with anyio.create_task_group() as tg:
                    await tg.start(client.run)
                    opened = await self._open(client, proc, load, report)
                    if opened:
                        self.client = client
                        await self._wait_for_disconnect(proc, client)
                        await self._close_session(proc, client)
                        exit_facts = await self._exit_facts(proc)
                        await report.disconnected(self, exit_facts)
                    tg.cancel_scope.cancel()
        except AgentStartError as exc:
            await report.failed(StartFailure(str(exc), retryable=False))
        finally:
            fs.close()

    async def _fetch_mcp_secrets(self) -> Mapping[str, str]:
        """The secrets the MCP servers name, fetched for this process only (held in memory
        for its `session/new`, load or resume; the redactor knows them from the provider)."""
        names = self.settings.secret_names() if self.settings else set()
        if not names:
            return {}
        if self.config.mcp_secrets is None:
            raise RuntimeError("this node has no control plane to fetch them from")
        values = await self.config.mcp_secrets(self.session_id)
        if missing := sorted(names - set(values)):
            raise RuntimeError(f"the control plane did not give {', '.join(missing)}")
        return values

    async def _open(
        self, client: AcpClient, proc: AgentProcess, load: str | None, report: RunReport
    ) -> bool:
        cwd = str(self.cwd)
        method = "initialize"
        settings = self.settings or StartSettings()
        servers = settings.acp_mcp_servers(self._mcp_secrets)
        try:
            with anyio.fail_after(self.config.start_timeout_s):
                info = await self.request(method, client.initialize())
                if refusal := settings_plan.mcp_refusal(settings, info.raw):
                    raise SettingRefused(refusal)
                if load is not None and info.resume_session:
                    # Resume restores the session without replaying history we would drop.
                    method = "session/resume"
                    await self.request(method, client.resume_session(load, cwd, servers))
                    acp_id = load
                elif load is not None:
                    method = "session/load"
                    await self.request(method, client.load_session(load, cwd, servers))
                    acp_id = load
                else:
                    method = "session/new"
                    acp_id = await self.request(method, client.new_session(cwd, servers))
                # A new process starts in the agent's defaults: the start settings again.
                by_env = self.spec.model_env is not None
                self.applied = settings_plan.plan(settings, client.offered, model_by_env=by_env)
                await settings_plan.apply(client, acp_id, self.applied, self.request)
        except SettingRefused as exc:
            failure = StartFailure(
                str(exc), retryable=False, error_code=INVALID_PARAMS, settings_refused=True
            )
        except JsonRpcError as exc:
            failure = StartFailure(
                f"the agent refused {method}: {exc.message} (JSON-RPC {exc.code})",
                retryable=False,
                error_code=exc.code,
            )
        except (PeerClosed, TimeoutError, AgentProtocolError) as exc:
            if isinstance(exc, TimeoutError):
                what = f"the agent did not answer {method} within {self.config.start_timeout_s:g}s"
            elif isinstance(exc, AgentProtocolError):
                what = str(exc)
            else:
                record = await proc.stop(self.config.stop_timings)
                what = f"the agent {record.describe()} during {method}"
            failure = StartFailure(
                what,
                retryable=not isinstance(exc, AgentProtocolError),
                timed_out=isinstance(exc, TimeoutError),
            )
        else:
            self.client = client  # before the report: it may re-apply a mode through it
            self.acp_session_id = acp_id
            await report.opened(self, info, acp_id, load is not None)
            return True
        await proc.stop(self.config.stop_timings)
        await proc.settle_stderr()
        await report.failed(
            dataclasses.replace(
                failure,
                stderr_tail=proc.stderr.text()[-4096:],
                auth_methods=client.info.auth_methods if client.info else (),
            )
        )
        return False

    async def _wait_for_disconnect(self, proc: AgentProcess, client: AcpClient) -> None:
        async with anyio.create_task_group() as tg:

            async def first(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(first, proc.exited)
            tg.start_soon(first, client.conn.closed)
            tg.start_soon(first, self._stop)

    async def _close_session(self, proc: AgentProcess, client: AcpClient) -> None:
        """``session/close`` at a session's end, bounded: the agent frees its state."""
        acp_id = self.acp_session_id
        if not (self._close and client.can_close and acp_id) or proc.exited.is_set():
            return
        try:
            with anyio.fail_after(CLOSE_TIMEOUT_S):
                await self.request("session/close", client.close_session(acp_id))
        except (JsonRpcError, PeerClosed, TimeoutError) as exc:
            # It is stopped anyway: a refused or slow close costs nothing more.
            log.info("session %s: session/close: %r", self.session_id, exc)

    async def _exit_facts(self, proc: AgentProcess) -> ExitFacts:
        in_flight = self.current_request
        record = await proc.stop(self.config.stop_timings)
        await proc.settle_stderr()
        return ExitFacts(
            exit_code=record.exit_code,
            signal=record.signal,
            oom_killed=record.oom_killed,
            uptime_s=record.uptime_s,
            in_flight=in_flight,
        )
