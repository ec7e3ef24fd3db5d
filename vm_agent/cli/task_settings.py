"""``vm-agent task run``'s agent settings flags, and ``task show``'s lines for them.

The flags make the task's own layer of agent settings (`agentSettings` of
`POST /api/tasks`, docs/control-plane.md); the control plane resolves it over the stored
layers and refuses what the node would. ``task show`` says each resolved field and the
layer it came from (an MCP server's env and header names only: the API shows no values),
and the mode/model changes asked of the running task (`POST /api/tasks/{id}/settings`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--model", default=None, help="the agent's model")
    run.add_argument("--mode", default=None, help="the agent's session mode (e.g. plan)")
    run.add_argument("--effort", default=None, help="the agent's reasoning effort")
    run.add_argument(
        "--config-option",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="an ACP config option (repeatable)",
    )
    run.add_argument(
        "--mcp-server",
        action="append",
        default=[],
        metavar="JSON",
        help='an ACP McpServer object, e.g. \'{"name":"fs","command":"mcp-fs","args":[],'
        '"env":[]}\' (repeatable)',
    )
    run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the agent, not secret (repeatable)",
    )


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} takes NAME=VALUE, not {item!r}")
        if name in out:
            raise ValueError(f"{flag} {name} given twice")
        out[name] = value
    return out


def body_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The task's `agentSettings` from the flags (None: none given); ValueError for a
    flag that is not well formed (the control plane checks the rest)."""
    out: dict[str, Any] = {
        k: getattr(args, k) for k in ("model", "mode", "effort") if getattr(args, k) is not None
    }
    if args.config_option:
        out["configOptions"] = _pairs(args.config_option, "--config-option")
    if args.env:
        out["env"] = _pairs(args.env, "--env")
    servers = []
    for raw in args.mcp_server:
        try:
            server = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"--mcp-server is not JSON: {exc}") from None
        if not isinstance(server, dict):
            raise ValueError("--mcp-server takes a JSON object (an ACP McpServer)")
        servers.append(server)
    if servers:
        out["mcpServers"] = servers
    return out or None


def _origin(entry: dict[str, Any]) -> str:
    where = f"{entry.get('layer')}"
    if entry.get("layerId"):
        where += f" {entry['layerId']}"
    if entry.get("version") is not None:
        where += f" v{entry['version']}"
    return f"(from {where})"


def _server(entry: dict[str, Any]) -> str:
    if "url" in entry:
        what = f"{entry.get('type')} {entry['url']}"
        names = entry.get("headerNames") or []
        return what + (f", headers {', '.join(names)}" if names else "")
    what = " ".join(["stdio", str(entry.get("command")), *map(str, entry.get("args") or [])])
    names = entry.get("envNames") or []
    return what + (f", env {', '.join(names)}" if names else "")


def _change(c: dict[str, Any]) -> str:
    state = "pending" if not c.get("sentAt") else "relayed"
    if c.get("error"):
        state = f"refused: {c['error']}"
    return f"   changed {c.get('field')} to {c.get('value')} ({state})"


def lines(view: dict[str, Any]) -> list[str]:
    """The resolved agent settings with where each came from, then the mode/model changes
    asked of the running task (nothing when none)."""
    changes = [_change(c) for c in view.get("settingChanges") or [] if isinstance(c, dict)]
    shown = view.get("agentSettings")
    if not isinstance(shown, dict) or not shown:
        return ["agent settings:", *changes] if changes else []
    out = ["agent settings:"]
    for name in ("model", "mode", "effort"):
        if isinstance(entry := shown.get(name), dict):
            out.append(f"   {name}: {entry.get('value')} {_origin(entry)}")
    for key, entry in (shown.get("configOptions") or {}).items():
        out.append(f"   config option {key}: {entry.get('value')} {_origin(entry)}")
    for entry in shown.get("mcpServers") or []:
        out.append(f"   MCP server {entry.get('name')}: {_server(entry)} {_origin(entry)}")
    for key, entry in (shown.get("env") or {}).items():
        out.append(f"   env {key}={entry.get('value')} {_origin(entry)}")
    return out + changes
