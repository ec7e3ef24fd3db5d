"""Secret references in a layer's agent settings (issue 25), pure: an MCP env or header
entry has a value or names a secret (tables); the references found, the node's values
keeping the reference, what answers show."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.demand.agent_settings import SettingsError, parse_settings
from control_plane.demand.reservations import LayerKind, ResourceRequirements
from control_plane.demand.resolver import Layer
from control_plane.demand.settings_resolver import resolve_settings


def stdio(*env: dict[str, Any]) -> dict[str, Any]:
    return {"name": "s", "command": "c", "env": list(env)}


def remote(*headers: dict[str, Any]) -> dict[str, Any]:
    return {"type": "http", "name": "r", "url": "https://x/", "headers": list(headers)}


@pytest.mark.parametrize(
    ("server", "field", "problem"),
    [
        (stdio({"name": "A"}), "mcpServers.0.env.0", "exactly one of value and secret"),
        (stdio({"name": "A", "value": "v", "secret": "s"}), "mcpServers.0.env.0", "exactly one"),
        (remote({"name": "A"}), "mcpServers.0.headers.0", "exactly one"),
        (stdio({"name": "A", "secret": "a/b"}), "mcpServers.0.env.0.secret", "pattern"),
        (stdio({"name": "A", "secret": "x" * 65}), "mcpServers.0.env.0.secret", "pattern"),
        (stdio({"name": "A", "secret": None}), "mcpServers.0.env.0", "exactly one"),
        (stdio({"name": "A", "secret": 1}), "mcpServers.0.env.0.secret", "string"),
        (stdio({"name": "A", "secrets": "s"}), "mcpServers.0.env.0.secrets", "unknown field"),
    ],
)
def test_an_entry_has_a_value_or_a_secret(server: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(SettingsError) as refused:
        parse_settings(LayerKind.PROJECT, {"mcpServers": [server]})
    assert (refused.value.layer, refused.value.field) == (LayerKind.PROJECT, field)
    assert problem in refused.value.problem


@pytest.mark.parametrize(
    ("servers", "refs"),
    [
        ([stdio({"name": "A", "value": "v"})], []),
        ([stdio({"name": "A", "secret": "gh"})], [("mcpServers.s.env.A", "gh")]),
        ([remote({"name": "Authorization", "secret": "web.tok"}), stdio()],
         [("mcpServers.r.headers.Authorization", "web.tok")]),
        ([stdio({"name": "A", "secret": "x"}, {"name": "B", "secret": "x"})],
         [("mcpServers.s.env.A", "x"), ("mcpServers.s.env.B", "x")]),
    ],
)  # fmt: skip
def test_the_references_found(servers: list[dict[str, Any]], refs: list[tuple[str, str]]) -> None:
    assert parse_settings(LayerKind.TASK, {"mcpServers": servers}).secret_refs() == refs


def test_the_node_gets_the_reference_and_answers_show_it() -> None:
    entry = {"name": "TOKEN", "secret": "gh"}
    settings = parse_settings(
        LayerKind.TASK, {"mcpServers": [stdio(entry, {"name": "H", "value": "1"})]}
    )
    layer = Layer(LayerKind.TASK, "t", ResourceRequirements(), settings=settings)
    resolved = resolve_settings([layer])
    [server] = resolved.values()["mcpServers"]
    assert server["env"] == [entry, {"name": "H", "value": "1"}]
    [shown] = resolved.shown()["mcpServers"]
    assert shown["envNames"] == ["TOKEN", "H"] and shown["secrets"] == {"TOKEN": "gh"}
    assert "1" not in str(shown.get("envNames")) and "value" not in shown
