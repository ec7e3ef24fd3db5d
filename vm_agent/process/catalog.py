"""The agent catalog: names to command lines, with an operator's override file on top.

The override file (``AGENTS_FILE``) is TOML::

    [agents.claude]
    command = ["/usr/local/bin/claude-agent-acp"]
    credentials = ["ANTHROPIC_API_KEY"]   # variables fetched from the control plane at spawn
    optional_credentials = ["ANTHROPIC_BASE_URL"]  # passed on when the control plane has them
    env = { CLAUDE_CODE_MAX_OUTPUT_TOKENS = "8192" }  # fixed, non-secret variables
    mcp_transports = ["stdio", "http", "sse"]  # MCP servers it takes at session/new
    model_env = "SOME_MODEL"  # where agentSettings.model goes when it has no model option
    empty_usage_means_cut = true  # a turn it ends with text, billed, no token counted: cut
"""

from __future__ import annotations

import shlex
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    command: tuple[str, ...] = Field(min_length=1)
    credentials: tuple[str, ...] = ()
    # From the control plane's secret store too, but only when it has them (a model
    # gateway's URL): their absence is no warning.
    optional_credentials: tuple[str, ...] = ()
    env: Mapping[str, str] = Field(default_factory=dict)
    # The MCP transports the agent takes at session/new: stdio is every ACP agent's; http and
    # sse only where its `mcpCapabilities` say so. Known ahead of any node (the control plane
    # refuses a task's MCP server at submission); the live initialize is checked at start.
    mcp_transports: tuple[Literal["stdio", "http", "sse"], ...] = ("stdio",)
    # For an agent that offers no config option of category "model": the variable its
    # process reads its model from, where a start's `agentSettings.model` goes instead.
    model_env: str | None = None
    # The agent ends a turn whose model stream the provider cut with an error as a whole
    # one (`end_turn`) and counts no token of it: such a turn (text shown, a request billed,
    # 0 input and 0 output tokens) is a transient provider failure (docs/outcomes.md). Only
    # where measured: an agent whose whole turns count no tokens would fail every prompt.
    empty_usage_means_cut: bool = False

    @field_validator("command")
    @classmethod
    def _non_empty_program(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value[0].strip():
            raise ValueError("the program must not be empty")
        return value

    @property
    def credential_names(self) -> tuple[str, ...]:
        """Every variable the control plane may supply for this agent."""
        return (*self.credentials, *self.optional_credentials)

    def with_args(self, *args: str) -> AgentSpec:
        return self.model_copy(update={"command": (*self.command, *args)})


def fake_agent_command(*args: str) -> tuple[str, ...]:
    # The same interpreter as the daemon, so the fake agent needs nothing on PATH.
    return (sys.executable, "-m", "vm_agent", "fake-agent", *args)


def builtin_agents() -> dict[str, AgentSpec]:
    specs = [
        AgentSpec(
            name="claude",
            command=("claude-agent-acp",),
            credentials=("ANTHROPIC_API_KEY",),
            optional_credentials=("ANTHROPIC_BASE_URL",),
            mcp_transports=("stdio", "http", "sse"),
            # Claude Code retries a refused model request 10 times over about 3 minutes,
            # unseen; 4 (about 8 s) still absorbs a blip, even mid-turn after a tool, and
            # leaves longer trouble to the daemon's prompt retries, which viewers see
            # (docs/agents.md, *Provider errors*).
            env={"CLAUDE_CODE_MAX_RETRIES": "4"},
            # A stream cut by Anthropic's mid-stream `overloaded_error`: claude-agent-acp
            # 0.23.1 showed "Half of " and answered `end_turn` with usage 0 input, 0 output
            # tokens, the cost of Claude Code's unseen non-streaming fallback request counted;
            # a whole turn against the same stand-in: 12 and 5 (docs/agents.md).
            empty_usage_means_cut=True,
        ),
        AgentSpec(
            name="codex",
            command=("codex-acp",),
            credentials=("OPENAI_API_KEY",),
            optional_credentials=("OPENAI_BASE_URL",),
            mcp_transports=("stdio", "http"),  # codex-acp 0.16: http, not sse
        ),
        AgentSpec(
            name="gemini",
            command=("gemini", "--acp"),
            credentials=("GEMINI_API_KEY",),
            mcp_transports=("stdio", "http", "sse"),  # gemini-cli 0.61
            model_env="GEMINI_MODEL",  # gemini-cli 0.61 offers no model config option
        ),
        AgentSpec(name="opencode", command=("opencode", "acp")),
        AgentSpec(name="fake", command=fake_agent_command("--scenario", "echo")),
    ]
    return {s.name: s for s in specs}


class CatalogError(Exception):
    pass


class Catalog:
    def __init__(self, agents: Mapping[str, AgentSpec]) -> None:
        self._agents = dict(agents)

    @classmethod
    def load(cls, override_file: Path | None = None) -> Catalog:
        agents = builtin_agents()
        if override_file is not None:
            agents.update(_read_overrides(override_file))
        return cls(agents)

    def get(self, name: str) -> AgentSpec:
        try:
            return self._agents[name]
        except KeyError:
            known = ", ".join(sorted(self._agents))
            raise CatalogError(f"unknown agent {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._agents)


def _read_overrides(path: Path) -> dict[str, AgentSpec]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CatalogError(f"cannot read agents file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"agents file {path} is not valid TOML: {exc}") from exc
    table = data.get("agents", {})
    if not isinstance(table, dict):
        raise CatalogError(f"agents file {path}: [agents] must be a table")
    out: dict[str, AgentSpec] = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise CatalogError(f"agents file {path}: [agents.{name}] must be a table")
        fields = dict(entry)
        if isinstance(fields.get("command"), str):  # a shell-like string is fine too
            fields["command"] = shlex.split(fields["command"])
        try:
            out[name] = AgentSpec(name=name, **fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CatalogError(
                f"agents file {path}: agents.{name}.{where}: {first['msg']}"
            ) from exc
    return out
