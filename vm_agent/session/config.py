"""How sessions run: deadlines, budgets, bounds. One value object handed to every session."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from vm_agent.common.redact import Redactor
from vm_agent.core.machine import SessionPolicy
from vm_agent.gitwork.push import GitWork
from vm_agent.jsonrpc.framing import DEFAULT_MAX_LINE_BYTES
from vm_agent.process.agent_env import DEFAULT_ALLOWED
from vm_agent.process.agent_process import StopTimings
from vm_agent.process.catalog import AgentSpec
from vm_agent.process.stderr_tail import DEFAULT_TAIL_BYTES

# Fetches an agent's own secret variables (its API key) at spawn time: (session id, spec).
CredentialsProvider = Callable[[str, AgentSpec], Awaitable[Mapping[str, str]]]

# Fetches the secrets a session's MCP servers name (its task's, from the control plane)
# at spawn time: (session id) -> {secret name: value}; never kept.
McpSecretsProvider = Callable[[str], Awaitable[Mapping[str, str]]]


def redacting(provider: CredentialsProvider, redactor: Redactor) -> CredentialsProvider:
    """The same provider; each value it hands out is added to the redactor's secrets."""

    async def fetch(session_id: str, spec: AgentSpec) -> Mapping[str, str]:
        env = dict(await provider(session_id, spec))
        for value in env.values():
            redactor.add_secret(value)
        return env

    return fetch


@dataclass(frozen=True, slots=True)
class SessionConfig:
    policy: SessionPolicy = field(default_factory=SessionPolicy)
    start_timeout_s: float = 60.0  # initialize plus session/new (or load) of one process
    stop_timings: StopTimings = field(default_factory=StopTimings)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    stderr_tail_bytes: int = DEFAULT_TAIL_BYTES
    env_allow: tuple[str, ...] = DEFAULT_ALLOWED
    daemon_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    fs_max_bytes: int = 8 * 1024 * 1024
    # fs/* and terminal/output requests of one agent handled at once (memory bound).
    max_heavy_requests: int = 4
    terminal_output_limit: int = 1024 * 1024
    # A task's repository (issue 23): clone, credentials, push; None: no control plane.
    git: GitWork | None = None
    # The secrets agentSettings' MCP servers name; None: no control plane (refused at start).
    mcp_secrets: McpSecretsProvider | None = None

    def policy_for(self, spec: AgentSpec) -> SessionPolicy:
        """The policy of a session of that agent: with its own signal of a cut answer."""
        return replace(self.policy, empty_usage_means_cut=spec.empty_usage_means_cut)
