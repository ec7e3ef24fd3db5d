"""A task's agent settings at submission: its own layer parsed, the layers' settings
resolved (settings_resolver.py) and checked against the task's agent, and the columns
the task row stores them in (the values `session/start` carries; what answers show)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from control_plane.demand.agent_settings import AgentSettings, Transport, check_env
from control_plane.demand.agent_settings import parse_settings as parse
from control_plane.demand.reservations import LayerKind
from control_plane.demand.resolver import Layer
from control_plane.demand.settings_resolver import (
    SettingsResolution,
    check_for_agent,
    resolve_settings,
)
from vm_agent.process.catalog import builtin_agents


def own_settings(raw: Mapping[str, Any] | None) -> AgentSettings:
    """The task's own layer (SettingsError names the field), before any row is read."""
    settings = parse(LayerKind.TASK, raw)
    check_env(LayerKind.TASK, settings)
    return settings


def agent_terms(agent: str) -> tuple[tuple[Transport, ...], tuple[str, ...]]:
    """The MCP transports `agent` takes and its credential names, per the built-in catalog;
    an agent known only from a node's catalog: stdio (every ACP agent's) and none known
    (its node refuses its own credential names at start)."""
    spec = builtin_agents().get(agent)
    if spec is None:
        return ("stdio",), ()
    return spec.mcp_transports, spec.credential_names


def resolve_for_task(layers: list[Layer], agent: str) -> SettingsResolution:
    """The task's settings over its layers (the platform's among them), refused
    (SettingsError, naming the layer and field) where the agent cannot take them."""
    resolved = resolve_settings(layers)
    check_for_agent(resolved, agent, *agent_terms(agent))
    return resolved


def columns(resolved: SettingsResolution) -> dict[str, Any]:
    """The task row's columns: NULL values when nothing is set (the start carries none)."""
    values = resolved.values()
    return {
        "agent_settings_json": json.dumps(values) if values else None,
        "agent_settings_provenance_json": json.dumps(resolved.shown()),
    }
