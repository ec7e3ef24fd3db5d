"""The ACP client role over one agent connection, typed where the daemon acts on a message.

Relayed ``session/update`` payloads stay raw (an update variant we do not know is never
dropped); responses we act on (``initialize``, ``session/new``) are validated with the
``agent-client-protocol`` package's models. Requests from the agent go to the services
given in ``ClientServices``; we advertise exactly the capabilities those services cover.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
from anyio.abc import TaskStatus
from pydantic import BaseModel, ValidationError

from vm_agent import __version__
from vm_agent.acp.lazy import lazy_module
from vm_agent.jsonrpc.connection import (
    Connection,
    ProtocolErrorHook,
    RequestHandler,
    Router,
    router,
)
from vm_agent.jsonrpc.errors import INVALID_PARAMS, JsonRpcError
from vm_agent.jsonrpc.transport import Transport

if TYPE_CHECKING:
    from acp import schema
else:
    schema = lazy_module("acp.schema")

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
# Requests whose answers can be megabytes: at most this many of one agent's are handled
# (read, answered and written back) at once; the agent waits for the rest.
DEFAULT_MAX_HEAVY_REQUESTS = 4
_HEAVY = ("fs/read_text_file", "fs/write_text_file", "terminal/output")


class AgentProtocolError(Exception):
    """The agent answered something that is not ACP (a malformed response)."""


class FileService(Protocol):
    async def read_text_file(self, params: Any) -> dict[str, Any]: ...
    async def write_text_file(self, params: Any) -> dict[str, Any]: ...


class TerminalService(Protocol):
    async def create(self, params: Any) -> dict[str, Any]: ...
    async def output(self, params: Any) -> dict[str, Any]: ...
    async def wait_for_exit(self, params: Any) -> dict[str, Any]: ...
    async def kill(self, params: Any) -> dict[str, Any]: ...
    async def release(self, params: Any) -> dict[str, Any]: ...


UpdateHandler = Callable[[Any], Awaitable[None] | None]
PermissionHandler = Callable[[Any], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class ClientServices:
    on_update: UpdateHandler
    request_permission: PermissionHandler
    fs: FileService | None = None
    terminals: TerminalService | None = None


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What ``initialize`` told us, reduced to what the daemon acts on."""

    protocol_version: int
    load_session: bool
    resume_session: bool
    close_session: bool
    # As advertised (without `_meta`, at most 16): a person reads them to know what to provide.
    auth_methods: tuple[dict[str, Any], ...]
    name: str | None
    version: str | None
    raw: dict[str, Any]


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], value: Any, method: str) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "result"
        raise AgentProtocolError(f"{method}: bad answer at {where}: {first['msg']}") from exc


class AcpClient:
    def __init__(
        self,
        transport: Transport,
        services: ClientServices,
        *,
        name: str,
        on_protocol_error: ProtocolErrorHook | None = None,
        max_heavy_requests: int = DEFAULT_MAX_HEAVY_REQUESTS,
    ) -> None:
        self.services = services
        self._heavy = anyio.Semaphore(max_heavy_requests)
        self.conn = Connection(
            transport, self._router(), name=name, on_protocol_error=on_protocol_error
        )
        self.info: AgentInfo | None = None
        # The session's modes and config options, as the agent's session/new (load,
        # resume) answer offered them (``modes``, ``configOptions``; absent: none offered).
        self.offered: dict[str, Any] = {}

    def _router(self) -> Router:
        s = self.services
        requests: dict[str, RequestHandler] = {
            "session/request_permission": self._guard_params(s.request_permission)
        }
        if s.fs is not None:
            requests["fs/read_text_file"] = self._guard_params(s.fs.read_text_file)
            requests["fs/write_text_file"] = self._guard_params(s.fs.write_text_file)
        if s.terminals is not None:
            t = s.terminals
            requests.update(
                {
                    "terminal/create": self._guard_params(t.create),
                    "terminal/output": self._guard_params(t.output),
                    "terminal/wait_for_exit": self._guard_params(t.wait_for_exit),
                    "terminal/kill": self._guard_params(t.kill),
                    "terminal/release": self._guard_params(t.release),
                }
            )
        bounded = {method: self._heavy for method in _HEAVY if method in requests}
        return router(requests, {"session/update": self._on_update}, bounded)

    @staticmethod
    def _guard_params(handler: Callable[[Any], Awaitable[Any]]) -> RequestHandler:
        def call(params: Any) -> Awaitable[Any]:
            if not isinstance(params, dict):
                raise JsonRpcError(INVALID_PARAMS, "params must be an object")
            return handler(params)

        return call

    def _on_update(self, params: Any) -> Awaitable[None] | None:
        if not isinstance(params, dict):
            log.warning("%s: session/update without object params; skipped", self.conn.name)
            return None
        return self.services.on_update(params)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.conn.run(task_status=task_status)

    def client_capabilities(self) -> dict[str, Any]:
        fs = self.services.fs is not None
        return {
            "fs": {"readTextFile": fs, "writeTextFile": fs},
            "terminal": self.services.terminals is not None,
        }

    # -- client to agent --------------------------------------------------------------------

    async def initialize(self) -> AgentInfo:
        raw = await self.conn.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "clientCapabilities": self.client_capabilities(),
                "clientInfo": {"name": "vm-agent", "title": "vm-agent", "version": __version__},
            },
        )
        answer = _validated(schema.InitializeResponse, raw, "initialize")
        caps = answer.agent_capabilities or schema.AgentCapabilities()
        session_caps = caps.session_capabilities
        self.info = AgentInfo(
            protocol_version=answer.protocol_version,
            load_session=bool(caps.load_session),
            resume_session=bool(session_caps and session_caps.resume is not None),
            close_session=bool(session_caps and session_caps.close is not None),
            auth_methods=advertised_auth_methods(raw),
            name=answer.agent_info.name if answer.agent_info else None,
            version=answer.agent_info.version if answer.agent_info else None,
            raw=raw,
        )
        return self.info

    async def authenticate(self, method_id: str) -> None:
        await self.conn.request("authenticate", {"methodId": method_id})

    # `mcp_servers`: ACP McpServer objects (the session's start settings), the same at
    # every load and resume as at session/new: a new process knows only what it is given.
    async def new_session(self, cwd: str, mcp_servers: list[dict[str, Any]] | None = None) -> str:
        raw = await self.conn.request("session/new", {"cwd": cwd, "mcpServers": mcp_servers or []})
        session_id = _validated(schema.NewSessionResponse, raw, "session/new").session_id
        self._keep_offered(raw)
        return session_id

    async def load_session(
        self, session_id: str, cwd: str, mcp_servers: list[dict[str, Any]] | None = None
    ) -> None:
        params = {"sessionId": session_id, "cwd": cwd, "mcpServers": mcp_servers or []}
        self._keep_offered(await self.conn.request("session/load", params))

    async def resume_session(
        self, session_id: str, cwd: str, mcp_servers: list[dict[str, Any]] | None = None
    ) -> None:
        params = {"sessionId": session_id, "cwd": cwd, "mcpServers": mcp_servers or []}
        self._keep_offered(await self.conn.request("session/resume", params))

    def _keep_offered(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self.offered = {k: raw[k] for k in ("modes", "configOptions") if raw.get(k)}

    async def prompt(
        self,
        session_id: str,
        prompt: list[dict[str, Any]],
        *,
        sent: anyio.Event | None = None,
        on_usage: Callable[[Any], None] | None = None,
    ) -> str:
        """Runs a prompt turn; returns the agent's stop reason as it said it.

        ``on_usage`` gets the answer's ``usage`` (raw: the caller judges it) when it has one.
        """
        raw = await self.conn.request(
            "session/prompt", {"sessionId": session_id, "prompt": prompt}, sent=sent
        )
        # Kept as a string: a stop reason newer than our schema is still an answer.
        reason = raw.get("stopReason") if isinstance(raw, dict) else None
        if not isinstance(reason, str):
            raise AgentProtocolError("session/prompt: answer has no stopReason")
        if on_usage is not None and "usage" in raw:
            on_usage(raw["usage"])
        return reason

    @property
    def can_close(self) -> bool:
        """Whether the agent advertised ``sessionCapabilities.close`` (``session/close``)."""
        return self.info is not None and self.info.close_session

    async def close_session(self, session_id: str) -> None:
        """``session/close``: the agent frees the session's state (only if it can_close)."""
        await self.conn.request("session/close", {"sessionId": session_id})

    async def cancel(self, session_id: str) -> None:
        await self.conn.notify("session/cancel", {"sessionId": session_id})

    async def set_mode(self, session_id: str, mode_id: str) -> None:
        await self.conn.request("session/set_mode", {"sessionId": session_id, "modeId": mode_id})
        modes = self.offered.get("modes")
        if isinstance(modes, dict):
            self.offered["modes"] = {**modes, "currentModeId": mode_id}

    async def set_config_option(self, session_id: str, change: dict[str, Any]) -> Any:
        """``change``: ``configId`` and ``value`` (and ``type`` for a boolean option), as
        the viewer gave them; the agent's answer (``configOptions``, all of them now)."""
        raw = await self.conn.request(
            "session/set_config_option", {**change, "sessionId": session_id}
        )
        options = raw.get("configOptions") if isinstance(raw, dict) else None
        if isinstance(options, list):
            self.offered["configOptions"] = options
        return raw


_MAX_AUTH_METHODS = 16


def advertised_auth_methods(raw: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The ``authMethods`` of an ``initialize`` answer that have an id, bounded."""
    methods = raw.get("authMethods")
    if not isinstance(methods, list):
        return ()
    kept = [
        {k: v for k, v in m.items() if k != "_meta"}
        for m in methods
        if isinstance(m, dict) and isinstance(m.get("id"), str)
    ]
    return tuple(kept[:_MAX_AUTH_METHODS])
