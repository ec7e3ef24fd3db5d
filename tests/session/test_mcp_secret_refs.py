"""A secret reference in agentSettings' MCP servers (issue 25) on the node: its shape
(tables), the value put in only where ACP gets the servers, the references kept (never a
value), and a node without a control plane refusing the start before anything runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.session.harness import fake, running
from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.server import params as p
from vm_agent.session.start_settings import StartSettings, check_secrets_for

REF = {"name": "TOKEN", "secret": "gh-token"}
STDIO = {"name": "tools", "command": "/usr/bin/tool", "env": [REF, {"name": "A", "value": "1"}]}
HTTP = {"type": "http", "name": "web", "url": "https://mcp.example/", "headers": [
    {"name": "Authorization", "secret": "web.auth"}]}  # fmt: skip


def settings_of(raw: Any) -> StartSettings:
    params = {"agent": "a", "cwd": "/w", "agentSettings": raw}
    found = p.parse(p.StartParams, "session/start", params).agent_settings
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"name": "T", "value": "v", "secret": "s"}, "exactly one of value and secret"),
        ({"name": "T"}, "exactly one of value and secret"),
        ({"name": "T", "secret": "a b"}, "secret"),
        ({"name": "T", "secret": "x" * 65}, "secret"),
        ({"name": "T", "secret": ""}, "secret"),
        ({"name": "T", "secret": 3}, "secret"),
    ],
)
def test_a_malformed_reference_is_refused(entry: dict[str, Any], says: str) -> None:
    with pytest.raises(JsonRpcError) as refused:
        settings_of({"mcpServers": [{"name": "s", "command": "c", "env": [entry]}]})
    assert refused.value.code == -32602
    assert says in refused.value.message


def test_values_go_to_acp_only_and_the_references_are_kept() -> None:
    settings = settings_of({"mcpServers": [STDIO, HTTP]})
    assert settings.secret_names() == {"gh-token", "web.auth"}
    assert settings.secret_values() == ["1"]  # literal values only: the redactor's
    values = {"gh-token": "ghp_value", "web.auth": "Bearer xyz12345", "other": "unused"}
    assert settings.acp_mcp_servers(values) == [
        {
            "name": "tools",
            "command": "/usr/bin/tool",
            "args": [],
            "env": [{"name": "TOKEN", "value": "ghp_value"}, {"name": "A", "value": "1"}],
        },
        {
            "type": "http",
            "name": "web",
            "url": "https://mcp.example/",
            "headers": [{"name": "Authorization", "value": "Bearer xyz12345"}],
        },
    ]
    kept = settings.wire()  # what the registry keeps: the references, no value
    assert kept["mcpServers"][0]["env"][0] == REF
    assert "ghp_value" not in repr(kept)
    assert StartSettings.model_validate(kept) == settings
    with pytest.raises(KeyError):
        settings.acp_mcp_servers({"gh-token": "only one"})


@pytest.mark.parametrize(
    ("raw", "can_fetch", "refused"),
    [
        ({"mcpServers": [STDIO]}, False, True),
        ({"mcpServers": [STDIO]}, True, False),
        ({"mcpServers": [{**STDIO, "env": []}]}, False, False),
        ({"model": "m"}, False, False),
        (None, False, False),
    ],
)
def test_without_a_control_plane_a_reference_is_refused(
    raw: Any, can_fetch: bool, refused: bool
) -> None:
    settings = None if raw is None else settings_of(raw)
    if refused:
        with pytest.raises(ValueError, match=r"gh-token\) need a control plane"):
            check_secrets_for(settings, can_fetch)
    else:
        check_secrets_for(settings, can_fetch)


@pytest.mark.anyio
async def test_the_supervisor_refuses_before_spawning_and_fetches_at_spawn(
    tmp_path: Path,
) -> None:
    settings = settings_of({"mcpServers": [STDIO]})
    async with running(tmp_path, [fake("echo")]) as h:
        with pytest.raises(ValueError, match="need a control plane"):
            await h.start("echo", session_id="alone", settings=settings)
        assert "alone" not in h.supervisor.sessions
        asked: list[str] = []

        async def none_given(session_id: str) -> dict[str, str]:
            asked.append(session_id)
            return {}

        config = h.supervisor.config
        h.supervisor.config = dataclasses.replace(config, mcp_secrets=none_given)
        session = await h.start("echo", session_id="linked", settings=settings)
        await session.wait_settled()
        assert asked and set(asked) == {"linked"}
        said = await h.of_type(session, "session.state")
        notes = " ".join(str(d.get("note")) for d in said)
        assert "MCP server secrets unavailable: the control plane did not give gh-token" in notes
