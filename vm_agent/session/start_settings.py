"""A session's start settings (``agentSettings`` of ``session/start``, docs/viewer-api.md):
the MCP servers the agent gets at ``session/new`` (and again at every load or resume), the
mode, model, effort and other config options set before the session takes prompts, and
extra environment for the agent process.

Their shape is checked here, before anything runs; what only the agent can say (whether it
takes an HTTP MCP server, offers the mode asked for) is ``settings_plan``'s, at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from vm_agent.process.agent_env import DEFAULT_ALLOWED
from vm_agent.process.catalog import AgentSpec

MAX_MCP_SERVERS = 32
MAX_ENV = 64
MAX_CONFIG_OPTIONS = 32
MAX_ARGS = 64
MAX_STRING = 4096

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STRING)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Set by the daemon or its containment for every agent (HOME, USER: the agent user's own):
# a start never replaces them. The daemon's allow-list and the agent's credentials too.
_DAEMON_SET = frozenset({*DEFAULT_ALLOWED, "LOGNAME", "PWD", "SHLVL"})
_NEVER_PREFIXES = ("LD_", "VM_AGENT_", "CONTROL_PLANE_", "FAKE_AGENT_")


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


REF_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"  # a secret's name, as the control plane has it


class NameValue(_Strict):
    """A value, or ``secret``: the name of the session owner's secret in the control plane,
    fetched at each spawn and never kept (exactly one of the two)."""

    name: Short
    value: Annotated[str, StringConstraints(max_length=MAX_STRING)] | None = None
    secret: Annotated[str, StringConstraints(pattern=REF_PATTERN)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> NameValue:
        if (self.value is None) == (self.secret is None):
            raise ValueError("an MCP env or header entry has exactly one of value and secret")
        return self


class StdioServer(_Strict):
    """ACP ``McpServerStdio``: the agent starts ``command`` itself."""

    type: Literal["stdio"] | None = None
    name: Short
    command: Text
    args: list[Annotated[str, StringConstraints(max_length=MAX_STRING)]] = Field(
        default_factory=list, max_length=MAX_ARGS
    )
    env: list[NameValue] = Field(default_factory=list, max_length=MAX_ENV)


class HttpServer(_Strict):
    type: Literal["http"]
    name: Short
    url: Text
    headers: list[NameValue] = Field(default_factory=list, max_length=MAX_ENV)


class SseServer(_Strict):
    type: Literal["sse"]
    name: Short
    url: Text
    headers: list[NameValue] = Field(default_factory=list, max_length=MAX_ENV)


def _transport(value: Any) -> str:
    kind = value.get("type", "stdio") if isinstance(value, dict) else getattr(value, "type", None)
    return "stdio" if kind is None else str(kind)


McpServer = Annotated[
    Annotated[StdioServer, Tag("stdio")]
    | Annotated[HttpServer, Tag("http")]
    | Annotated[SseServer, Tag("sse")],
    Discriminator(_transport),
]


def transport_of(server: StdioServer | HttpServer | SseServer) -> str:
    return "stdio" if isinstance(server, StdioServer) else server.type


class StartSettings(_Strict):
    model: Short | None = None
    mode: Short | None = None
    effort: Short | None = None
    config_options: dict[Short, Annotated[str, StringConstraints(max_length=256)] | bool] = Field(
        default_factory=dict, max_length=MAX_CONFIG_OPTIONS
    )
    mcp_servers: list[McpServer] = Field(default_factory=list, max_length=MAX_MCP_SERVERS)
    env: dict[str, Annotated[str, StringConstraints(max_length=MAX_STRING)]] = Field(
        default_factory=dict, max_length=MAX_ENV
    )

    @field_validator("mcp_servers")
    @classmethod
    def _unique_names(cls, servers: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for server in servers:
            if server.name in seen:
                raise ValueError(f"two MCP servers are named {server.name!r}")
            seen.add(server.name)
        return servers

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if refusal := env_name_refusal(name):
                raise ValueError(refusal)
        return env

    def wire(self) -> dict[str, Any]:
        """As the viewer API has it (camelCase, only what was given): kept in the registry."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    def acp_mcp_servers(self, secrets: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """``mcpServers`` as ACP's session/new, load and resume take them, each secret
        reference replaced by its value from ``secrets`` (KeyError: one is missing)."""
        out = []
        for server in self.mcp_servers:
            shown = server.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(server, StdioServer):
                shown.pop("type", None)  # ACP's stdio server has no type field
            key = "env" if isinstance(server, StdioServer) else "headers"
            shown[key] = [
                {
                    "name": p.name,
                    "value": p.value if p.secret is None else (secrets or {})[p.secret],
                }
                for p in _pairs(server)
            ]
            out.append(shown)
        return out

    def secret_values(self) -> list[str]:
        """MCP headers and server environment values given here: tokens, as likely as not."""
        return [p.value for server in self.mcp_servers for p in _pairs(server) if p.value]

    def secret_names(self) -> set[str]:
        """The control plane's secrets the MCP servers name (fetched at each spawn)."""
        return {p.secret for server in self.mcp_servers for p in _pairs(server) if p.secret}


def _pairs(server: StdioServer | HttpServer | SseServer) -> list[NameValue]:
    return server.env if isinstance(server, StdioServer) else server.headers


def check_secrets_for(settings: StartSettings | None, can_fetch: bool) -> None:
    """ValueError when the settings name a secret and the node has no control plane to
    fetch it from (``vm-agent serve`` alone)."""
    names = settings.secret_names() if settings is not None else set()
    if names and not can_fetch:
        raise ValueError(
            "agentSettings.mcpServers: secret references ("
            + ", ".join(sorted(names))
            + ") need a control plane to fetch them from, and this node has none"
        )


def env_name_refusal(name: str) -> str | None:
    """Why a start may not set ``name`` in any agent's environment (None: it may)."""
    if not ENV_NAME.fullmatch(name):
        return f"{name!r} is not a variable name of the form [A-Z_][A-Z0-9_]*"
    if name in _DAEMON_SET or name.startswith(_NEVER_PREFIXES):
        return f"{name} is set by the node and cannot be overridden"
    return None


def check_env_for(settings: StartSettings | None, spec: AgentSpec, allowed: Iterable[str]) -> None:
    """ValueError naming a variable the agent's credentials or the daemon's allow-list own."""
    if settings is None:
        return
    owned = {*spec.credential_names, *allowed}
    for name in settings.env:
        if name in owned:
            raise ValueError(
                f"agentSettings.env: {name} is set by the node for agent {spec.name} "
                "and cannot be overridden"
            )


def check_transports_for(settings: StartSettings | None, spec: AgentSpec) -> None:
    """ValueError for an MCP server whose transport the catalog says the agent never takes."""
    if settings is None:
        return
    for server in settings.mcp_servers:
        kind = transport_of(server)
        if kind not in spec.mcp_transports:
            raise ValueError(
                f"agentSettings.mcpServers: server {server.name!r} uses {kind}, which agent "
                f"{spec.name} does not take (it takes {', '.join(spec.mcp_transports)})"
            )


def kept_settings(metadata: dict[str, Any]) -> StartSettings | None:
    """A restored session's start settings, from its registry row."""
    kept = metadata.get("agent_settings")
    return None if not kept else StartSettings.model_validate(kept)
