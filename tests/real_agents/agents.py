"""The pinned real agents (``agents/``, docs/agents.md) and what it takes to run each offline.

A ``Kit`` knows one agent: its program under ``agents/node_modules/.bin``, the variable
its key goes in, the model API it speaks (and the stand-in for it), how to point it at
that stand-in, and the tool calls a script can ask of it. ``catalog_entry`` puts the
agent in a network namespace of its own (``loopback_only.py``) with an explicit, writable
HOME, so nothing it tries reaches past this machine and nothing of ours is its home.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from tests import capabilities
from tests.real_agents import anthropic_api, gemini_api, openai_api
from tests.real_agents.model_api import Recorded, Script, ToolCall
from vm_agent.process.catalog import builtin_agents

REPO = Path(__file__).resolve().parents[2]
AGENTS_DIR = REPO / "agents"
BIN = AGENTS_DIR / "node_modules" / ".bin"
JAIL = Path(__file__).with_name("loopback_only.py")
# The port the stand-in has inside each agent's namespace (its own loopback: no clash).
MODEL_PORT = 18765
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Kit:
    name: str
    program: tuple[str, ...]
    key_var: str
    app: Callable[[Script], Starlette]
    base_env: Callable[[str, Path], dict[str, str]]  # (model URL, home) -> variables
    shell: Callable[[str], ToolCall]  # a command the agent runs itself
    key_in: Callable[[Recorded], str | None]  # the key as a request carried it
    # (path, content) -> a tool call the agent carries out through the client's fs/*:
    # it reads the file (fs/read_text_file) and writes it (fs/write_text_file)
    write: Callable[[Path, str], ToolCall] | None = None
    setup_home: Callable[[Path, str], None] = field(default=lambda home, url: None)
    # A new process can take the session up again (session/resume or session/load).
    loads_sessions: bool = True
    # The agent closes the model's stream when its prompt is cancelled (rather than
    # reading on until the provider sends more).
    drops_stream_on_cancel: bool = True
    # The first prompt after a cancel runs a new model turn (rather than ending at once).
    runs_next_prompt_after_cancel: bool = True
    # Auth methods it advertises (ids), that an auth_required outcome must carry.
    auth_methods: tuple[str, ...] = ()

    def env(self, model_url: str | None, home: Path) -> dict[str, str]:
        """The agent's variables: its PATH (the pinned Node first), HOME, the stand-in.

        Without ``model_url`` the agent is as a new user finds it: pointed at nothing.
        """
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = {"PATH": f"{BIN}:{SYSTEM_PATH}", "HOME": str(home), "LANG": "C.UTF-8"}
        if model_url is not None:
            self.setup_home(home, model_url)
            env.update(self.base_env(model_url, home))
        return env


def _claude_env(url: str, home: Path) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": url,
        # Claude Code then calls nothing but the base URL (no telemetry, no updates, no
        # error reports); what it still tries (a plugin blocklist) the namespace stops.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def _codex_home(home: Path, url: str) -> None:
    codex = home / ".codex"
    codex.mkdir(exist_ok=True, mode=0o700)
    # A model provider of our own: the Responses API at the stand-in, keyed by
    # OPENAI_API_KEY; every command asks first (untrusted) and runs without Codex's own
    # sandbox (bubblewrap is not on these machines; the namespace is ours).
    (codex / "config.toml").write_text(
        "\n".join(
            [
                'model = "gpt-5-stand-in"',
                'model_provider = "standin"',
                'approval_policy = "untrusted"',
                'sandbox_mode = "danger-full-access"',
                "check_for_update_on_startup = false",
                "",
                "[model_providers.standin]",
                'name = "stand-in"',
                f'base_url = "{url}/v1"',
                'wire_api = "responses"',
                'env_key = "OPENAI_API_KEY"',
                "request_max_retries = 0",
                "stream_max_retries = 0",
                "",
            ]
        )
    )


def _gemini_home(home: Path, url: str) -> None:
    gemini = home / ".gemini"
    gemini.mkdir(exist_ok=True, mode=0o700)
    settings = {
        "privacy": {"usageStatisticsEnabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "telemetry": {"enabled": False},
    }
    (gemini / "settings.json").write_text(json.dumps(settings))


CLAUDE = Kit(
    name="claude",
    program=("claude-agent-acp",),
    key_var="ANTHROPIC_API_KEY",
    app=anthropic_api.app,
    base_env=_claude_env,
    shell=lambda cmd: ToolCall("Bash", {"command": cmd, "description": "Run the command"}),
    key_in=lambda r: r.headers.get("x-api-key"),
    # claude-agent-acp 0.23.1 answers the prompt after a cancel with what is left of the
    # interrupted turn (end_turn, no model call); that prompt's own message then runs in
    # the next prompt, in a turn of its own before the next prompt's.
    runs_next_prompt_after_cancel=False,
)

CODEX = Kit(
    name="codex",
    program=("codex-acp",),
    key_var="OPENAI_API_KEY",
    app=openai_api.app,
    base_env=lambda url, home: {"CODEX_HOME": str(home / ".codex")},
    setup_home=_codex_home,
    shell=lambda cmd: ToolCall("exec_command", {"cmd": cmd}),
    key_in=lambda r: r.headers.get("authorization", "").removeprefix("Bearer ") or None,
    auth_methods=("chatgpt", "codex-api-key", "openai-api-key"),
    # codex-acp 0.16 answers the cancel at once (stopReason cancelled) but leaves the
    # model's stream open; a held stream stays open until the provider sends more.
    drops_stream_on_cancel=False,
)

GEMINI = Kit(
    name="gemini",
    program=("gemini", "--acp"),
    key_var="GEMINI_API_KEY",
    app=gemini_api.app,
    base_env=lambda url, home: {"GOOGLE_GEMINI_BASE_URL": url},
    setup_home=_gemini_home,
    shell=lambda cmd: ToolCall(
        "run_shell_command", {"command": cmd, "description": "Run the command"}
    ),
    # write_file reads the old content and writes through fs/*; read_file (0.61) reads
    # the disk itself, not through the client.
    write=lambda path, content: ToolCall(
        "write_file", {"file_path": str(path), "content": content}
    ),
    key_in=lambda r: r.headers.get("x-goog-api-key"),
    auth_methods=("gemini-api-key", "oauth-personal", "vertex-ai"),
    # gemini-cli 0.61 advertises loadSession, but session/load in a new process answers
    # -32603 "No previous sessions found for this project": setting up the loaded
    # session's config rewrites that session's chat record (only the context left)
    # before it reads it back. Measured after a SIGKILL and after a clean stop alike.
    loads_sessions=False,
)

KITS = {kit.name: kit for kit in (CLAUDE, CODEX, GEMINI)}


def catalog_entry(
    kit: Kit,
    *,
    model_socket: Path,
    home: Path,
    key: str | None,
    credentials: bool = False,
    pointed: bool = True,
    read_only: Path | None = None,
    mask: Path | None = None,
) -> dict[str, Any]:
    """An ``AGENTS_FILE`` entry running ``kit`` offline.

    ``key``: the key goes in the entry's fixed variables, unless ``credentials`` says it
    is to come the credentials way (the caller's environment for ``vm-agent prompt``).
    ``pointed``: the agent is configured for the stand-in (else as a new user has it).
    ``read_only`` / ``mask``: the agent sees that directory read-only / that file empty,
    so only the client's ``fs/*`` can write it / read its content.
    """
    env = kit.env(f"http://127.0.0.1:{MODEL_PORT}" if pointed else None, home)
    if key is not None and not credentials:
        env[kit.key_var] = key
    jail = [sys.executable, str(JAIL), "--forward", f"{MODEL_PORT}={model_socket}"]
    unshare = [_unshare(), "--net", "--map-root-user"]
    if read_only is not None:
        jail += ["--read-only", str(read_only)]
    if mask is not None:
        jail += ["--mask", str(mask)]
    if read_only is not None or mask is not None:
        unshare.append("--mount")
    entry: dict[str, Any] = {"command": [*unshare, "--", *jail, "--", *kit.program], "env": env}
    # What the built-in entry knows of the agent beyond its command (an entry replaces it).
    builtin = builtin_agents()[kit.name]
    entry["mcp_transports"] = list(builtin.mcp_transports)
    if builtin.model_env:
        entry["model_env"] = builtin.model_env
    if builtin.empty_usage_means_cut:
        entry["empty_usage_means_cut"] = True
    if credentials:
        entry["credentials"] = [kit.key_var]
    return entry


def write_agents_file(path: Path, entries: Mapping[str, dict[str, Any]]) -> Path:
    lines = []
    for name, entry in entries.items():
        # JSON strings and arrays are valid TOML (the same escapes).
        lines.append(f"[agents.{name}]")
        lines.append(f"command = {json.dumps(entry['command'])}")
        for key in ("credentials", "mcp_transports", "model_env", "empty_usage_means_cut"):
            if key in entry:
                lines.append(f"{key} = {json.dumps(entry[key])}")
        pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in entry["env"].items())
        lines.append(f"env = {{ {pairs} }}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _unshare() -> str:
    return shutil.which("unshare") or "/usr/bin/unshare"


@cache
def missing() -> str | None:
    """Why the real agents cannot run here, or None."""
    for program in ("node", "claude-agent-acp", "codex-acp", "gemini"):
        if not (BIN / program).exists():
            return f"{BIN / program} is missing (run `cd agents && npm ci`; .ci/run does)"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare (util-linux) is missing: real agents run in a network namespace"
    try:
        done = subprocess.run(
            [unshare, "--net", "--map-root-user", "--", sys.executable, str(JAIL), "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a network namespace: {exc}"
    if done.returncode != 0:
        return f"cannot make a network namespace: {done.stderr.strip()}"
    return None


def require_real_agents() -> None:
    """Skips (outside CI) or fails (under CI) when the real agents cannot run."""
    reason = missing()
    if reason is None:
        return
    capabilities.missing(reason)
