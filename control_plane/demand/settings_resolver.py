"""The agent settings resolver: the layers' settings in, resolved settings with provenance out.

The same layers and precedence as the reservation (resolver.py): task, trigger, agent
profile, project, user, platform. `model`, `mode` and `effort` each come from the first
layer that defines them. `configOptions`, `mcpServers` and `env` merge by key across the
layers (config option id, server name, variable name): each entry comes whole from the
first layer that has that key, with that layer as its provenance. So a project's MCP
server and the task's own both reach the agent, and a task's `GITHUB` server replaces the
project's `GITHUB` server (whole, not field by field). A higher layer cannot remove an
entry a lower one gives, only replace it. Pure: no I/O.

The result in two forms: `values()`, what the node takes (`session/start`'s
`agentSettings`, every value), and `shown()`, what answers show: per field its value and
provenance, an MCP server's env and header names without their values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from control_plane.demand.agent_settings import (
    MAX_ENV,
    MAX_MCP_SERVERS,
    SETTINGS_SCALARS,
    McpServer,
    SettingsError,
    Transport,
    env_refusal,
    transport_refusal,
)
from control_plane.demand.reservations import LAYER_PRECEDENCE, FieldProvenance
from control_plane.demand.resolver import Layer


def _provenance(layer: Layer) -> FieldProvenance:
    return FieldProvenance(layer=layer.kind, layer_id=layer.id, version=layer.version)


def _origin(p: FieldProvenance) -> dict[str, Any]:
    return p.model_dump(by_alias=True, mode="json")


@dataclass(frozen=True)
class SettingsResolution:
    scalars: dict[str, tuple[str, FieldProvenance]] = field(default_factory=dict)
    config_options: dict[str, tuple[str, FieldProvenance]] = field(default_factory=dict)
    mcp_servers: list[tuple[McpServer, FieldProvenance]] = field(default_factory=list)
    env: dict[str, tuple[str, FieldProvenance]] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """The resolved values as `session/start` carries them (absent: not set)."""
        out: dict[str, Any] = {name: v for name, (v, _) in self.scalars.items()}
        if self.config_options:
            out["configOptions"] = {k: v for k, (v, _) in self.config_options.items()}
        if self.mcp_servers:
            out["mcpServers"] = [s.model_dump(exclude_none=True) for s, _ in self.mcp_servers]
        if self.env:
            out["env"] = {k: v for k, (v, _) in self.env.items()}
        return out

    def shown(self) -> dict[str, Any]:
        """Each field's value and where it came from; no MCP env or header value."""
        out: dict[str, Any] = {
            name: {"value": v, **_origin(p)} for name, (v, p) in self.scalars.items()
        }
        if self.config_options:
            out["configOptions"] = {
                k: {"value": v, **_origin(p)} for k, (v, p) in self.config_options.items()
            }
        if self.mcp_servers:
            out["mcpServers"] = [{**s.shown(), **_origin(p)} for s, p in self.mcp_servers]
        if self.env:
            out["env"] = {k: {"value": v, **_origin(p)} for k, (v, p) in self.env.items()}
        return out


def resolve_settings(layers: Iterable[Layer]) -> SettingsResolution:
    """Resolve the layers' settings (any order; at most one of each kind, the platform's
    among them). A merged `mcpServers` or `env` past the node's bounds is refused, naming
    the layer whose entry went past."""
    ordered = sorted(layers, key=lambda layer: LAYER_PRECEDENCE.index(layer.kind))
    kinds = [layer.kind for layer in ordered]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"a layer kind given twice: {[k.value for k in kinds]}")
    out = SettingsResolution()
    for layer in ordered:
        s, origin = layer.settings, _provenance(layer)
        for name in SETTINGS_SCALARS:
            value = getattr(s, name)
            if value is not None and name not in out.scalars:
                out.scalars[name] = (value, origin)
        for key, value in (s.config_options or {}).items():
            out.config_options.setdefault(key, (value, origin))
        taken = {server.name for server, _ in out.mcp_servers}
        for server in s.mcp_servers or []:
            if server.name not in taken:
                if len(out.mcp_servers) == MAX_MCP_SERVERS:
                    raise SettingsError(
                        layer.kind,
                        "mcpServers",
                        f"with the layers above it, more than {MAX_MCP_SERVERS} MCP servers",
                    )
                out.mcp_servers.append((server, origin))
        for key, value in (s.env or {}).items():
            if key not in out.env:
                if len(out.env) == MAX_ENV:
                    raise SettingsError(
                        layer.kind, "env", f"with the layers above it, more than {MAX_ENV} entries"
                    )
                out.env[key] = (value, origin)
    return out


def check_for_agent(
    resolved: SettingsResolution,
    agent: str,
    transports: Iterable[Transport],
    credentials: Iterable[str],
) -> None:
    """Refuse what the task's agent cannot take, naming the layer the entry came from: an
    MCP server over a transport it does not take, an env name the node would refuse or
    that looks like a secret (the agent's credential names among them)."""
    takes = tuple(transports)
    names = tuple(credentials)
    for server, origin in resolved.mcp_servers:
        if why := transport_refusal(server.transport, agent, takes):
            raise SettingsError(origin.layer, f"mcpServers.{server.name}", why)
    for name, (_, origin) in resolved.env.items():
        if why := env_refusal(name, names):
            raise SettingsError(origin.layer, f"env.{name}", why)
