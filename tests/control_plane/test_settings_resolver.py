"""Table tests for agent settings: their shapes, the checks a submission makes, and the
resolver (first layer wins a field; config options, MCP servers and env merge by key)."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.demand.agent_settings import (
    MAX_ENV,
    MAX_MCP_SERVERS,
    SettingsError,
    check_env,
    env_refusal,
    parse_settings,
)
from control_plane.demand.reservations import LayerKind
from control_plane.demand.resolver import Layer
from control_plane.demand.settings_resolver import check_for_agent, resolve_settings
from control_plane.dispatch.task_settings import agent_terms

K = LayerKind
ORDER = [K.TASK, K.TRIGGER, K.AGENT_PROFILE, K.PROJECT, K.USER, K.PLATFORM]
STDIO = {"name": "files", "command": "mcp-files", "args": ["--root", "/w"]}
HTTP = {"type": "http", "name": "search", "url": "https://mcp.example/", "headers": []}


def layer(kind: LayerKind, raw: dict[str, Any]) -> Layer:
    version = None if kind is K.TASK else 2
    return Layer(kind, f"{kind.value}-id", settings=parse_settings(kind, raw), version=version)


def origin(kind: LayerKind) -> dict[str, Any]:
    return {
        "layer": kind.value,
        "layerId": f"{kind.value}-id",
        "version": None if kind is K.TASK else 2,
    }


@pytest.mark.parametrize("field", ["model", "mode", "effort"])
@pytest.mark.parametrize("winner", ORDER)
def test_each_layer_wins_a_scalar_over_every_layer_below(field: str, winner: LayerKind) -> None:
    at = ORDER.index(winner)
    layers = [
        layer(k, {} if i < at else {field: "mine" if i == at else f"below-{k.value}"})
        for i, k in enumerate(ORDER)
    ]
    resolved = resolve_settings(layers)
    assert resolved.values() == {field: "mine"}
    assert resolved.shown() == {field: {"value": "mine", **origin(winner)}}


def test_nothing_set_resolves_to_nothing() -> None:
    resolved = resolve_settings([layer(k, {}) for k in ORDER])
    assert (resolved.values(), resolved.shown()) == ({}, {})


def test_config_options_env_and_servers_merge_by_key_each_with_its_layer() -> None:
    server_of_project = {**STDIO, "env": [{"name": "ROOT", "value": "/p"}]}
    resolved = resolve_settings(
        [
            layer(K.PLATFORM, {"env": {"FOO": "platform", "BAR": "platform"}}),
            layer(
                K.PROJECT, {"mcpServers": [server_of_project, HTTP], "configOptions": {"a": "p"}}
            ),
            layer(K.USER, {"configOptions": {"a": "u", "b": "u"}, "env": {"FOO": "user"}}),
            layer(K.TASK, {"mcpServers": [STDIO], "model": "m", "configOptions": {"c": "t"}}),
        ]
    )
    assert resolved.values() == {
        "model": "m",
        "configOptions": {"c": "t", "a": "p", "b": "u"},
        # The task's `files` replaces the project's whole (its env goes with it).
        "mcpServers": [
            {**STDIO, "env": []},
            {"type": "http", "name": "search", "url": "https://mcp.example/", "headers": []},
        ],
        "env": {"FOO": "user", "BAR": "platform"},
    }
    shown = resolved.shown()
    assert shown["configOptions"] == {
        "c": {"value": "t", **origin(K.TASK)},
        "a": {"value": "p", **origin(K.PROJECT)},
        "b": {"value": "u", **origin(K.USER)},
    }
    assert [(s["name"], s["layer"]) for s in shown["mcpServers"]] == [
        ("files", "task"),
        ("search", "project"),
    ]
    assert shown["env"]["BAR"] == {"value": "platform", **origin(K.PLATFORM)}


def test_mcp_env_and_header_values_are_never_shown() -> None:
    stdio = {**STDIO, "env": [{"name": "GH", "value": "ghp_secret"}]}
    http = {**HTTP, "headers": [{"name": "Authorization", "value": "Bearer s3cret"}]}
    settings = parse_settings(K.TASK, {"mcpServers": [stdio, http]})
    resolved = resolve_settings([Layer(K.TASK, "t", settings=settings)])
    for shown in (resolved.shown(), settings.shown()):
        assert "secret" not in repr(shown) and "s3cret" not in repr(shown)
    assert resolved.shown()["mcpServers"][0]["envNames"] == ["GH"]
    assert resolved.shown()["mcpServers"][1]["headerNames"] == ["Authorization"]
    # The node is given every value.
    assert resolved.values()["mcpServers"][1]["headers"][0]["value"] == "Bearer s3cret"


def _servers(n: int, prefix: str) -> list[dict[str, Any]]:
    return [{"name": f"{prefix}{i}", "command": "x"} for i in range(n)]


def test_merged_past_the_nodes_bounds_names_the_layer_that_went_past() -> None:
    half = MAX_MCP_SERVERS // 2 + 1
    with pytest.raises(SettingsError) as err:
        resolve_settings(
            [
                layer(K.TASK, {"mcpServers": _servers(half, "t")}),
                layer(K.PROJECT, {"mcpServers": _servers(half, "p")}),
            ]
        )
    assert (err.value.layer, err.value.field) == (K.PROJECT, "mcpServers")
    # The same names are one server each: no overflow.
    same = _servers(MAX_MCP_SERVERS, "s")
    resolve_settings([layer(K.TASK, {"mcpServers": same}), layer(K.USER, {"mcpServers": same})])
    env = {f"A{i}": "x" for i in range(MAX_ENV)}
    with pytest.raises(SettingsError) as err:
        resolve_settings([layer(K.USER, {"env": env}), layer(K.PLATFORM, {"env": {"B": "y"}})])
    assert (err.value.layer, err.value.field) == (K.PLATFORM, "env")


SHAPES: list[tuple[dict[str, Any], str, str]] = [
    ({"temperature": 1}, "temperature", "unknown field"),
    ({"model": ""}, "model", "at least 1 character"),
    ({"model": 3}, "model", "valid string"),
    ({"effort": "x" * 257}, "effort", "at most 256 characters"),
    ({"configOptions": {"a": "x" * 257}}, "configOptions.a", "at most 256 characters"),
    ({"env": {"A": "x" * 4097}}, "env.A", "longer than 4096 bytes"),
    ({"env": {"A": "é" * 2049}}, "env.A", "longer than 4096 bytes"),  # bytes, not characters
    ({"configOptions": {"a": True}}, "configOptions.a", "valid string"),
    ({"env": {"A": 1}}, "env.A", "valid string"),
    ({"env": {f"A{i}": "x" for i in range(MAX_ENV + 1)}}, "env", "at most 64"),
    ({"mcpServers": _servers(MAX_MCP_SERVERS + 1, "s")}, "mcpServers", "at most 32"),
    ({"mcpServers": [{"name": "a"}]}, "mcpServers.0.command", "Field required"),
    ({"mcpServers": [{**STDIO, "type": "ws"}]}, "mcpServers.0.type", "'http' or 'sse'"),
    ({"mcpServers": [{**HTTP, "type": "ws"}]}, "mcpServers.0.type", "'http' or 'sse'"),
    ({"mcpServers": [{**STDIO, "args": ["a"] * 65}]}, "mcpServers.0.args", "at most 64"),
    ({"mcpServers": [{**HTTP, "url": "ftp://x"}]}, "mcpServers.0.url", "pattern"),
    ({"mcpServers": [{**HTTP, "command": "x"}]}, "mcpServers.0.command", "unknown field"),
    ({"mcpServers": [{**STDIO, "env": {"A": "b"}}]}, "mcpServers.0.env", "valid list"),
    ({"mcpServers": [{**STDIO, "args": ["x" * 4097]}]}, "mcpServers.0.args.0", "4096 bytes"),
    ({"mcpServers": [{**STDIO, "name": "x" * 257}]}, "mcpServers.0.name", "at most 256"),
    ({"mcpServers": [STDIO, {**HTTP, "name": "files"}]}, "mcpServers.1.name", "given twice"),
    ({"mcpServers": {"files": STDIO}}, "mcpServers", "valid list"),
]


@pytest.mark.parametrize(("raw", "field", "problem"), SHAPES)
def test_shapes_the_node_would_refuse_are_refused_naming_the_field(
    raw: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(K.PROJECT, raw)
    assert (err.value.layer, err.value.field) == (K.PROJECT, field)
    assert problem in err.value.problem
    assert str(err.value).startswith(f"project agentSettings: field {field!r}: ")


ENV_NAMES: list[tuple[str, str | None]] = [
    ("RUST_LOG", None),
    ("NODE_ENV", None),
    ("KEYBOARD", None),  # KEY only as a whole word at the end
    ("PATH", "node's own"),
    ("path", "name is 1-128"),  # the node takes upper-case names only
    ("HOME", "node's own"),
    ("PWD", "node's own"),
    ("SHLVL", "node's own"),
    ("FAKE_AGENT_STATE", "node's own"),
    ("LD_PRELOAD", "node's own"),
    ("VM_AGENT_TOKEN_FILE", "node's own"),
    ("CONTROL_PLANE_X", "node's own"),
    ("OPENAI_API_KEY", "looks like a secret"),
    ("GITHUB_TOKEN", "looks like a secret"),
    ("CLIENT_SECRET", "looks like a secret"),
    ("PASSWORD", "looks like a secret"),
    ("DB_PASSWORD", "looks like a secret"),
    ("1ABC", "name is 1-128"),
    ("A-B", "name is 1-128"),
]


@pytest.mark.parametrize(("name", "problem"), ENV_NAMES)
def test_env_names(name: str, problem: str | None) -> None:
    why = env_refusal(name)
    assert why is None if problem is None else problem in (why or ""), why
    if problem == "looks like a secret":
        assert "as its credentials" in (why or "")


def test_the_agents_own_credential_names_are_refused() -> None:
    assert "one of the agent's credentials" in (
        env_refusal("ANTHROPIC_BASE_URL", ["ANTHROPIC_BASE_URL"]) or ""
    )
    with pytest.raises(SettingsError) as err:
        check_env(K.USER, parse_settings(K.USER, {"env": {"OK": "1", "GH_TOKEN": "x"}}))
    assert (err.value.layer, err.value.field) == (K.USER, "env.GH_TOKEN")


TRANSPORTS: list[tuple[str, dict[str, Any], str | None]] = [
    ("claude", STDIO, None),
    ("claude", HTTP, None),
    ("claude", {**HTTP, "type": "sse"}, None),
    ("fake", STDIO, None),
    ("fake", {**STDIO, "type": "stdio"}, None),
    ("fake", HTTP, "takes MCP servers over stdio only, not http"),
    ("fake", {**HTTP, "type": "sse"}, "not sse"),
    # An agent known only from a node's catalog: stdio only.
    ("my-own-agent", STDIO, None),
    ("my-own-agent", HTTP, "not http"),
]


@pytest.mark.parametrize(("agent", "server", "problem"), TRANSPORTS)
def test_transports_per_agent_name_the_layer_the_server_came_from(
    agent: str, server: dict[str, Any], problem: str | None
) -> None:
    resolved = resolve_settings([layer(K.TASK, {}), layer(K.PROJECT, {"mcpServers": [server]})])
    if problem is None:
        check_for_agent(resolved, agent, *agent_terms(agent))
        return
    with pytest.raises(SettingsError) as err:
        check_for_agent(resolved, agent, *agent_terms(agent))
    assert (err.value.layer, err.value.field) == (K.PROJECT, f"mcpServers.{server['name']}")
    assert problem in err.value.problem


def test_an_agents_credential_name_from_a_stored_layer_names_that_layer() -> None:
    resolved = resolve_settings([layer(K.USER, {"env": {"ANTHROPIC_BASE_URL": "http://x"}})])
    check_for_agent(resolved, "codex", *agent_terms("codex"))  # not codex's
    with pytest.raises(SettingsError) as err:
        check_for_agent(resolved, "claude", *agent_terms("claude"))
    assert (err.value.layer, err.value.field) == (K.USER, "env.ANTHROPIC_BASE_URL")
