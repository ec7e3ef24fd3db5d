"""agentSettings of session/start: the shape refused before anything runs (tables), and the
pure decisions against what an agent said (its MCP capabilities, its modes and options)."""

from __future__ import annotations

from typing import Any

import pytest

from vm_agent.jsonrpc.errors import JsonRpcError
from vm_agent.process.catalog import AgentSpec, builtin_agents
from vm_agent.server import params as p
from vm_agent.session.settings_plan import Change, SettingRefused, mcp_refusal, plan
from vm_agent.session.start_settings import (
    StartSettings,
    check_env_for,
    check_transports_for,
    kept_settings,
)

STDIO = {"name": "tools", "command": "/usr/bin/tool", "args": ["--x"], "env": []}
HTTP = {"type": "http", "name": "web", "url": "https://mcp.example/", "headers": []}
SSE = {"type": "sse", "name": "events", "url": "https://mcp.example/sse", "headers": []}


def start(settings: Any) -> p.StartParams:
    return p.parse(
        p.StartParams, "session/start", {"agent": "a", "cwd": "/w", "agentSettings": settings}
    )


def test_a_full_start_parses_and_goes_to_acp_as_acp_has_it() -> None:
    given = {
        "model": "smart",
        "mode": "code",
        "effort": "high",
        "configOptions": {"verbose": True, "style": "terse"},
        "mcpServers": [
            {**STDIO, "env": [{"name": "TOKEN", "value": "s3cret-token-value"}]},
            {**HTTP, "headers": [{"name": "Authorization", "value": "Bearer abcdefgh"}]},
            SSE,
        ],
        "env": {"TASK_HINT": "1", "RUST_LOG": "debug"},
    }
    settings = start(given).agent_settings
    assert settings is not None
    # Kept in the registry as given (defaults left out): a restart rebuilds the same ones.
    assert settings.wire()["env"] == given["env"]
    assert StartSettings.model_validate(settings.wire()) == settings
    servers = settings.acp_mcp_servers()
    assert servers[0] == {**STDIO, "env": [{"name": "TOKEN", "value": "s3cret-token-value"}]}
    assert servers[1]["type"] == "http" and servers[1]["headers"][0]["name"] == "Authorization"
    assert servers[2] == SSE
    assert sorted(settings.secret_values()) == ["Bearer abcdefgh", "s3cret-token-value"]
    assert kept_settings({"agent_settings": settings.wire()}) == settings
    assert kept_settings({}) is None


def test_a_stdio_server_defaults_and_may_say_its_type() -> None:
    settings = start({"mcpServers": [{"name": "t", "command": "c", "type": "stdio"}]})
    assert settings.agent_settings is not None
    assert settings.agent_settings.acp_mcp_servers() == [
        {"name": "t", "command": "c", "args": [], "env": []}
    ]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"models": "x"}, "agentSettings.models: Extra inputs are not permitted"),
        ({"mode": ""}, "agentSettings.mode"),
        ({"model": "x" * 300}, "agentSettings.model"),
        ({"mcpServers": [{**STDIO, "cwd": "/"}]}, "mcpServers.0.stdio.cwd: Extra inputs"),
        ({"mcpServers": [{"type": "ws", "name": "w", "url": "u"}]}, "Input tag 'ws'"),
        ({"mcpServers": [{"type": "http", "name": "w"}]}, "mcpServers.0.http.url: Field required"),
        ({"mcpServers": [{"name": "t"}]}, "mcpServers.0.stdio.command: Field required"),
        ({"mcpServers": [STDIO, STDIO]}, "two MCP servers are named 'tools'"),
        ({"mcpServers": [{**STDIO, "name": f"s{i}"} for i in range(33)]}, "at most 32"),
        ({"mcpServers": [{**STDIO, "args": ["a" * 5000]}]}, "mcpServers.0.stdio.args.0"),
        ({"env": {f"V{i}": "1" for i in range(65)}}, "agentSettings.env"),
        ({"env": {"lower": "1"}}, "'lower' is not a variable name"),
        ({"env": {"A-B": "1"}}, "'A-B' is not a variable name"),
        ({"env": {"PATH": "/evil"}}, "PATH is set by the node"),
        ({"env": {"HOME": "/"}}, "HOME is set by the node"),
        ({"env": {"USER": "root"}}, "USER is set by the node"),
        ({"env": {"LD_PRELOAD": "/x.so"}}, "LD_PRELOAD is set by the node"),
        ({"env": {"VM_AGENT_STATE_DIR": "/"}}, "VM_AGENT_STATE_DIR is set by the node"),
        ({"env": {"X": "v" * 5000}}, "agentSettings.env.X"),
        ({"configOptions": {"o": 3}}, "agentSettings.configOptions.o"),
        ("plan", "agentSettings: Input should be"),
    ],
)
def test_malformed_settings_are_refused_naming_the_field(settings: Any, says: str) -> None:
    with pytest.raises(JsonRpcError) as refused:
        start(settings)
    assert refused.value.code == -32602
    assert says in refused.value.message, refused.value.message


def test_snake_case_is_not_the_wire_name() -> None:
    with pytest.raises(JsonRpcError, match="agent_settings: Extra inputs"):
        p.parse(p.StartParams, "session/start", {"agent": "a", "cwd": "/w", "agent_settings": {}})


CLAUDE = builtin_agents()["claude"]
CODEX = builtin_agents()["codex"]
OPENCODE = builtin_agents()["opencode"]


@pytest.mark.parametrize(
    ("spec", "env", "refused"),
    [
        (
            CLAUDE,
            {"ANTHROPIC_API_KEY": "k"},
            "ANTHROPIC_API_KEY is set by the node for agent claude",
        ),
        (CLAUDE, {"ANTHROPIC_BASE_URL": "http://evil"}, "ANTHROPIC_BASE_URL is set by the node"),
        (CODEX, {"OPENAI_API_KEY": "k"}, "OPENAI_API_KEY is set by the node for agent codex"),
        (CLAUDE, {"OPENAI_API_KEY": "k"}, None),  # not claude's
        (CLAUDE, {"ANTHROPIC_MODEL": "claude-sonnet-4-5"}, None),
    ],
)
def test_env_never_overrides_the_agents_credentials(
    spec: AgentSpec, env: dict[str, str], refused: str | None
) -> None:
    settings = StartSettings(env=env)
    if refused is None:
        check_env_for(settings, spec, ("PATH",))
        return
    with pytest.raises(ValueError, match=refused):
        check_env_for(settings, spec, ("PATH",))


def test_env_never_overrides_the_operators_allow_list() -> None:
    with pytest.raises(ValueError, match="CORP_PROXY is set by the node"):
        check_env_for(StartSettings(env={"CORP_PROXY": "x"}), CLAUDE, ("CORP_PROXY",))


@pytest.mark.parametrize(
    ("spec", "server", "refused"),
    [
        (CLAUDE, HTTP, None),
        (CLAUDE, SSE, None),
        (CODEX, STDIO, None),
        (CODEX, HTTP, None),
        (
            CODEX,
            SSE,
            "server 'events' uses sse, which agent codex does not take (it takes stdio, http)",
        ),
        (
            OPENCODE,
            HTTP,
            "server 'web' uses http, which agent opencode does not take (it takes stdio)",
        ),
    ],
)
def test_the_catalog_refuses_a_transport_before_anything_runs(
    spec: AgentSpec, server: dict[str, Any], refused: str | None
) -> None:
    settings = StartSettings.model_validate({"mcpServers": [server]})
    if refused is None:
        check_transports_for(settings, spec)
        return
    with pytest.raises(ValueError) as error:
        check_transports_for(settings, spec)
    assert refused in str(error.value)


@pytest.mark.parametrize(
    ("caps", "servers", "refused"),
    [
        ({}, [STDIO], None),
        ({}, [HTTP], "server 'web' uses http, which the agent does not take"),
        ({"mcpCapabilities": {"http": True}}, [HTTP], None),
        ({"mcpCapabilities": {"http": True}}, [SSE], "server 'events' uses sse"),
        ({"mcpCapabilities": {"http": True, "sse": True}}, [STDIO, HTTP, SSE], None),
        ({"mcpCapabilities": {"http": "yes"}}, [HTTP], "its mcpCapabilities: stdio"),
    ],
)
def test_the_live_initialize_decides_http_and_sse(
    caps: dict[str, Any], servers: list[dict[str, Any]], refused: str | None
) -> None:
    settings = StartSettings.model_validate({"mcpServers": servers})
    answer = mcp_refusal(settings, {"agentCapabilities": caps})
    assert answer == refused if refused is None else refused in (answer or "")


MODES = {"currentModeId": "ask", "availableModes": [{"id": "ask"}, {"id": "code"}]}
MODEL = {
    "id": "model",
    "category": "model",
    "type": "select",
    "options": [
        {"value": "fast"},
        {"group": "big", "name": "Big", "options": [{"value": "smart"}]},
    ],
}
EFFORT = {
    "id": "effort",
    "category": "thought_level",
    "type": "select",
    "options": [{"value": "high"}],
}
VERBOSE = {"id": "verbose", "type": "boolean", "currentValue": False}
ASK_CODE = "it offers: ask, code"
OFFERED = {"modes": MODES, "configOptions": [MODEL, EFFORT, VERBOSE]}


@pytest.mark.parametrize(
    ("given", "offered", "changes"),
    [
        ({}, {}, []),
        (
            {"mode": "code"},
            OFFERED,
            [Change("session/set_mode", {"modeId": "code"}, "agentSettings.mode", ASK_CODE)],
        ),
        (
            {"model": "smart", "effort": "high", "mode": "ask"},
            OFFERED,
            [
                Change("session/set_mode", {"modeId": "ask"}, "agentSettings.mode", ASK_CODE),
                Change(
                    "session/set_config_option",
                    {"configId": "model", "value": "smart"},
                    "agentSettings.model",
                    "it offers: fast, smart",
                ),
                Change(
                    "session/set_config_option",
                    {"configId": "effort", "value": "high"},
                    "agentSettings.effort",
                    "it offers: high",
                ),
            ],
        ),
        # A model it does not list goes to the agent, which may take it as an alias.
        (
            {"model": "sonnet"},
            OFFERED,
            [
                Change(
                    "session/set_config_option",
                    {"configId": "model", "value": "sonnet"},
                    "agentSettings.model",
                    "it offers: fast, smart",
                )
            ],
        ),
        (
            {"configOptions": {"verbose": True}},
            OFFERED,
            [
                Change(
                    "session/set_config_option",
                    {"configId": "verbose", "type": "boolean", "value": True},
                    "agentSettings.configOptions.verbose",
                )
            ],
        ),
    ],
)
def test_the_plan_sets_mode_model_effort_then_options(
    given: dict[str, Any], offered: dict[str, Any], changes: list[Change]
) -> None:
    assert plan(StartSettings.model_validate(given), offered) == changes


@pytest.mark.parametrize(
    ("given", "offered", "says"),
    [
        ({"mode": "plan"}, OFFERED, "agentSettings.mode: no mode 'plan' (it offers: ask, code)"),
        ({"mode": "plan"}, {}, "agentSettings.mode: no mode 'plan' (it offers no modes)"),
        (
            {"model": "x"},
            {},
            "model: the agent offers no config option of category 'model' (its options: none)",
        ),
        ({"effort": "max"}, OFFERED, "agentSettings.effort: the agent offers no value 'max'"),
        (
            {"effort": "max"},
            {"configOptions": [MODEL]},
            "category 'thought_level' (its options: model)",
        ),
        (
            {"configOptions": {"nope": "1"}},
            OFFERED,
            "offers no option 'nope' (its options: model, effort, verbose)",
        ),
        (
            {"configOptions": {"verbose": "yes"}},
            OFFERED,
            "configOptions.verbose: option 'verbose' takes true or false",
        ),
    ],
)
def test_a_setting_the_agent_does_not_offer_is_refused_with_what_it_offers(
    given: dict[str, Any], offered: dict[str, Any], says: str
) -> None:
    with pytest.raises(SettingRefused) as refused:
        plan(StartSettings.model_validate(given), offered)
    assert says in str(refused.value), str(refused.value)


def test_a_model_by_env_needs_no_model_option() -> None:
    """An agent whose catalog names its model variable (gemini: GEMINI_MODEL) gets the model
    in its environment; a model option it does offer is still used."""
    settings = StartSettings(model="gemini-2.5-pro")
    assert plan(settings, {}, model_by_env=True) == []
    (change,) = plan(settings, OFFERED, model_by_env=True)
    assert change.params == {"configId": "model", "value": "gemini-2.5-pro"}
    assert builtin_agents()["gemini"].model_env == "GEMINI_MODEL"
    assert builtin_agents()["claude"].model_env is None
