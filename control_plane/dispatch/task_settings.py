"""A task's agent settings at submission: its own layer parsed, the layers' settings
resolved (settings_resolver.py) and checked against the task's agent, and the columns
the task row stores them in (the values `session/start` carries; what answers show)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, select

from control_plane.demand.agent_settings import (
    AgentSettings,
    SettingsError,
    Transport,
    check_env,
    server_secret_refs,
)
from control_plane.demand.agent_settings import parse_settings as parse
from control_plane.demand.reservations import LayerKind
from control_plane.demand.resolver import Layer
from control_plane.demand.settings_resolver import (
    SettingsResolution,
    check_for_agent,
    resolve_settings,
)
from control_plane.identity import user_secrets
from control_plane.storage.db import tasks as tasks_table
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


def check_secrets(conn: Connection, owner: str, resolved: SettingsResolution) -> None:
    """Refuse a reference to a secret `owner` does not have (SettingsError naming the
    layer the MCP server came from and the entry): a task uses its owner's secrets only,
    whichever layer names them."""
    for server, origin in resolved.mcp_servers:
        for where, name in server_secret_refs([server]):
            if user_secrets.missing(conn, owner, [name]):
                raise SettingsError(origin.layer, where, no_secret(name))


def no_secret(name: str) -> str:
    return f"no secret {name!r} of yours (PUT /api/secrets/{name} first)"


def columns(resolved: SettingsResolution) -> dict[str, Any]:
    """The task row's columns: NULL values when nothing is set (the start carries none)."""
    values = resolved.values()
    return {
        "agent_settings_json": json.dumps(values) if values else None,
        "agent_settings_provenance_json": json.dumps(resolved.shown()),
    }


def session_secret_names(engine: Engine, workspace_id: str | None, owner: str) -> set[str]:
    """The secrets the settings of the task a session runs name (its workspace's task, of
    the session's owner); none for a session made without a task."""
    if workspace_id is None:
        return set()
    t = tasks_table.c
    with engine.connect() as conn:
        stored = conn.execute(
            select(t.agent_settings_json).where(t.workspace_id == workspace_id, t.owner == owner)
        ).scalars()
        found = [json.loads(raw) for raw in stored if raw]
    return {name for values in found for _, name in parse(LayerKind.TASK, values).secret_refs()}
