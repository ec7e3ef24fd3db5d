"""The daemon's settings turned into the configurations of its parts (sessions, containment,
the listener's TLS, the callback token), each checked at start.

A problem found here is a `StartupError`: one line for a person, exit status 2.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from vm_agent.common.redact import Redactor
from vm_agent.containment.host import ContainmentConfig, machine_memory_mb
from vm_agent.containment.limits import LimitDefaults
from vm_agent.containment.users import PoolSpec
from vm_agent.control_link import CallbackTokenStore, InsecureTokenFile, TokenFileError
from vm_agent.core.machine import SessionPolicy
from vm_agent.core.provider_errors import RetryPolicy
from vm_agent.edge.exposure import ListenerMode
from vm_agent.edge.tls import TlsConfigError, server_context
from vm_agent.runtime.settings import DEFAULT_ENV_FILE, ENV_PREFIX, Settings
from vm_agent.session.config import SessionConfig
from vm_agent.session.start_policy import StartPolicy
from vm_agent.session.supervisor import machine_policy

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start as configured; one line for a person (exit status 2)."""


def session_config(settings: Settings, daemon_env: Mapping[str, str]) -> SessionConfig:
    policy = SessionPolicy(
        prompt_timeout_s=settings.prompt_timeout_s,
        no_output_timeout_s=settings.no_output_timeout_s,
        cancel_grace_s=settings.cancel_grace_s,
        restart_budget=settings.restart_budget,
        restart_window_s=settings.restart_window_s,
        retry=RetryPolicy(
            attempts=settings.prompt_retry_attempts,
            base_s=settings.prompt_retry_base_s,
            max_s=settings.prompt_retry_max_s,
        ),
    )
    return SessionConfig(
        policy=policy,
        start_timeout_s=settings.start_timeout_s,
        max_line_bytes=settings.max_line_bytes,
        daemon_env=dict(daemon_env),
        max_heavy_requests=settings.fs_max_inflight,
    )


def start_policy(settings: Settings) -> StartPolicy:
    """Caps on sessions and on a reservation's limits; the limits default to the machine."""
    machine = machine_policy(
        max_sessions=settings.max_sessions, max_sessions_per_owner=settings.max_sessions_per_owner
    )
    return dataclasses.replace(
        machine,
        max_memory_mb=settings.session_max_memory_mb or machine.max_memory_mb,
        max_cpu_millis=settings.session_max_cpu_millis or machine.max_cpu_millis,
    )


def pool_spec(settings: Settings) -> PoolSpec:
    return PoolSpec(
        count=settings.agent_users,
        uid_base=settings.agent_uid_base,
        prefix=settings.agent_user_prefix,
        homes_dir=PurePosixPath(settings.agent_homes_dir),
    )


def containment_config(settings: Settings, environ: Mapping[str, str]) -> ContainmentConfig:
    memory = settings.session_memory_mb
    if memory is None and (total := machine_memory_mb()) is not None:
        memory = max(256, total * 3 // 4)  # a runaway session must not take the daemon down
    env_file = Path(environ.get(f"{ENV_PREFIX}ENV_FILE", str(DEFAULT_ENV_FILE)))
    return ContainmentConfig(
        state_dir=settings.state_dir,
        pool=pool_spec(settings),
        workspace_roots=settings.workspace_root_paths,
        protected=(
            settings.state_dir,
            settings.agent_homes_dir,
            settings.callback_token_file,
            env_file,
        ),
        defaults=LimitDefaults(
            memory_mb=memory,
            cpu_millis=settings.session_cpu_millis,
            pids_max=settings.session_pids_max,
            swap_mb=settings.session_swap_mb,
        ),
        agents_as_root=settings.agents_as_root,
        cgroups=settings.cgroups,
    )


def load_tls(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None for plain ws:// (allowed by the settings)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        if settings.listener_mode is ListenerMode.PLAIN_EXPOSED:
            log.warning(
                "VM_AGENT_ALLOW_PLAINTEXT: serving plain ws:// on %s, which is not loopback: "
                "tokens and prompts cross the network in clear",
                settings.listen_host,
            )
        return None
    try:
        return server_context(settings.tls_cert_file, settings.tls_key_file)
    except TlsConfigError as exc:
        raise StartupError(str(exc)) from exc


def load_callback_tokens(settings: Settings, redactor: Redactor) -> CallbackTokenStore | None:
    """The callback token, or None when the daemon runs without a control plane (dev only).

    Outside dev mode a missing or insecure token file is a `StartupError`.
    """
    if settings.control_plane_url is None:
        return None
    try:
        return CallbackTokenStore.load(settings.callback_token_file, redactor=redactor)
    except InsecureTokenFile as exc:
        # Refused in dev mode too: a token others can read is never fine.
        raise StartupError(f"VM_AGENT_CALLBACK_TOKEN_FILE: {exc}") from exc
    except TokenFileError as exc:
        if settings.dev_mode:
            log.warning("dev mode: %s; not reporting to the control plane", exc)
            return None
        raise StartupError(f"VM_AGENT_CALLBACK_TOKEN_FILE: {exc}") from exc
