"""The daemon's configuration (docs/configuration.md): ``VM_AGENT_*`` variables and an env file.

A bad value stops the daemon at start with one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vm_agent.containment.paths import parse_roots
from vm_agent.edge.exposure import TLS_VARIABLES, ListenerMode, listener_mode, refusal_message

ENV_PREFIX = "VM_AGENT_"
DEFAULT_ENV_FILE = Path("/etc/vm-agent/env")


class SettingsError(Exception):
    """One line for a person: which variable is wrong and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    node_id: str = Field(default="dev-node", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    control_plane_url: str | None = None
    callback_token_file: Path = Path("/etc/vm-agent/callback-token")
    # First start only (docs/callback-api.md): traded for the callback token, then deleted.
    bootstrap_token_file: Path = Path("/etc/vm-agent/bootstrap-token")
    # Backoff bounds while the control plane cannot be reached for the bootstrap.
    bootstrap_retry_initial_s: float = Field(default=1.0, gt=0)
    bootstrap_retry_max_s: float = Field(default=60.0, gt=0)
    jwks_url: str | None = None
    # The CA of a control plane whose certificate no public CA signed: trusted for the
    # control plane's connections only (control_link/trust.py).
    control_plane_ca_file: Path | None = None
    # The `iss` viewer tokens must carry; defaults to CONTROL_PLANE_URL (the control plane
    # signs with its public base URL as issuer).
    jwt_issuer: str | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=0, le=65535)
    # TLS on the listener (PEM files; the key 0600): wss:// and https on the one port. On a
    # VM the bootstrap writes both: the key made here, the certificate the control plane signed.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # The control plane signed the certificate (the bootstrap): renew it through the control
    # plane at two-thirds of its life (control_link/renewal.py).
    tls_renew: bool = False
    # Plain ws:// on a non-loopback LISTEN_HOST (refused at start unless this is set).
    allow_plaintext: bool = False
    # Caps on the viewer port's connections (checked at accept, before TLS or HTTP).
    max_connections: int = Field(default=1024, ge=1)
    max_connections_per_address: int = Field(default=256, ge=1)
    max_unauthenticated: int = Field(default=128, ge=1)
    max_unauthenticated_per_address: int = Field(default=32, ge=1)
    # New connections per second from one address (a burst of the line above, then this).
    max_new_connections_per_address_per_s: float = Field(default=20.0, gt=0)
    # A loopback-only port that serves /metrics without a token (for a local scraper).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    state_dir: Path = Path("/var/lib/vm-agent")
    agents_file: Path | None = None
    prompt_timeout_s: float | None = Field(default=None, gt=0)
    no_output_timeout_s: float | None = Field(default=None, gt=0)
    cancel_grace_s: float = Field(default=5.0, gt=0)
    # Bound on initialize plus session/new (or session/load) of each agent process.
    start_timeout_s: float = Field(default=60.0, gt=0)
    restart_budget: int = Field(default=3, ge=0)
    restart_window_s: float = Field(default=300.0, gt=0)
    # A prompt failed by a transient model-provider error (overloaded, rate limited) is
    # sent again: this many sends in all (1: never again), backoff from BASE doubling to MAX.
    prompt_retry_attempts: int = Field(default=3, ge=1, le=20)
    prompt_retry_base_s: float = Field(default=2.0, ge=0)
    prompt_retry_max_s: float = Field(default=60.0, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    recover_on_start: bool = False
    retention_bytes_per_session: int = Field(default=64 * 1024 * 1024, gt=0)
    max_line_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    viewer_queue_limit: int = Field(default=10_000, ge=10)
    log_format: Literal["json", "console"] = "json"
    # Dev mode: no callback token or JWKS is required (local development only).
    dev_mode: bool = False

    # Containment (docs/containment.md). Sessions work strictly under one of these (':'-separated).
    workspace_roots: str = "/srv/workspaces"
    # The agent-user pool (docs/containment.md): `{prefix}{i}`, uid = gid = base + i.
    agent_users: int = Field(default=16, ge=1, le=4096)
    agent_uid_base: int = Field(default=61000, ge=1000, le=2**31 - 2**16)
    agent_user_prefix: str = Field(default="vm-agent-u", pattern=r"^[a-z_][a-z0-9_-]{0,20}$")
    agent_homes_dir: Path = Path("/var/lib/vm-agent-homes")
    # A root daemon runs agents as root only when told so (logged as a warning).
    agents_as_root: bool = False
    # Session cgroups (v2); off: process groups only.
    cgroups: bool = True
    # The socket the workspaces' git credential helper asks (issue 23); any local process
    # may connect, the answer depends on whose session it is. None: in the first workspace
    # root (the daemon's, 0755: agents reach it, only root writes it; one per daemon).
    git_credential_socket: Path | None = None
    # Limits when a session's reservation does not say (memory: default 3/4 of the machine).
    session_memory_mb: int | None = Field(default=None, gt=0)
    session_cpu_millis: int | None = Field(default=None, gt=0)
    session_pids_max: int = Field(default=4096, ge=16)
    session_swap_mb: int = Field(default=0, ge=0)
    # Caps on a reservation's limits per session (a viewer's or the control plane's);
    # none: the machine's memory and CPUs.
    session_max_memory_mb: int | None = Field(default=None, gt=0)
    session_max_cpu_millis: int | None = Field(default=None, gt=0)
    # Live sessions (not stopped, not in error) on the node, and of one owner; the node
    # scope (the control plane) is held to the node's cap only.
    max_sessions: int = Field(default=64, ge=1)
    max_sessions_per_owner: int = Field(default=16, ge=1)
    # fs/* and terminal/output requests of one agent handled at once (bounds memory).
    fs_max_inflight: int = Field(default=4, ge=1, le=64)

    @field_validator("workspace_roots")
    @classmethod
    def _roots(cls, value: str) -> str:
        parse_roots(value)
        return value

    @field_validator("agent_homes_dir")
    @classmethod
    def _absolute_homes(cls, value: Path) -> Path:
        if not value.is_absolute() or value == Path("/"):
            raise ValueError("must be an absolute directory other than /")
        return value

    @field_validator("control_plane_url", "jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator(
        "tls_cert_file", "tls_key_file", "metrics_port", "control_plane_ca_file", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _listener_is_safe(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(f"{TLS_VARIABLES} go together: set both or neither")
        if self.tls_renew and (not self.tls_enabled or self.control_plane_url is None):
            raise ValueError(
                f"VM_AGENT_TLS_RENEW needs {TLS_VARIABLES} and VM_AGENT_CONTROL_PLANE_URL"
            )
        mode = listener_mode(
            self.listen_host, tls=self.tls_enabled, allow_plaintext=self.allow_plaintext
        )
        if mode is ListenerMode.REFUSED:
            raise ValueError(refusal_message(self.listen_host))
        return self

    @model_validator(mode="after")
    def _pool_fits(self) -> Settings:
        last = self.agent_uid_base + self.agent_users - 1
        if self.agent_uid_base <= 65534 <= last:
            raise ValueError(
                f"VM_AGENT_AGENT_UID_BASE: the pool's uids {self.agent_uid_base}..{last} "
                "include 65534 (nobody)"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_control_plane(self) -> Settings:
        if not self.dev_mode:
            if self.jwks_url is None:
                raise ValueError("VM_AGENT_JWKS_URL is required (or set VM_AGENT_DEV_MODE=1)")
            if self.control_plane_url is None:
                raise ValueError(
                    "VM_AGENT_CONTROL_PLANE_URL is required (or set VM_AGENT_DEV_MODE=1)"
                )
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def listener_mode(self) -> ListenerMode:
        return listener_mode(
            self.listen_host, tls=self.tls_enabled, allow_plaintext=self.allow_plaintext
        )

    @property
    def issuer(self) -> str | None:
        return self.jwt_issuer or self.control_plane_url

    @property
    def event_log_path(self) -> Path:
        return self.state_dir / "events.sqlite3"

    @property
    def workspace_root_paths(self) -> tuple[PurePosixPath, ...]:
        return parse_roots(self.workspace_roots)

    @property
    def git_credential_socket_path(self) -> Path:
        if self.git_credential_socket is not None:
            return self.git_credential_socket
        return Path(str(self.workspace_root_paths[0])) / ".vm-agent-git-credential.sock"


M = TypeVar("M", bound=BaseSettings)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Reads the environment and the env file; raises ``SettingsError`` with one line."""
    return _load(Settings, env)


def load_pool_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings for `vm-agent agent-users`: validated as the daemon's, but without
    requiring the control plane's (it runs from cloud-init, before the daemon)."""
    source = dict(os.environ if env is None else env)
    source[f"{ENV_PREFIX}DEV_MODE"] = "1"
    return _load(Settings, source)


def _load(model: type[M], env: Mapping[str, str] | None) -> M:
    source = dict(os.environ if env is None else env)
    env_file = Path(source.get(f"{ENV_PREFIX}ENV_FILE", str(DEFAULT_ENV_FILE)))
    try:
        file_values = _read_env_file(env_file)
    except OSError as exc:
        raise SettingsError(
            f"{ENV_PREFIX}ENV_FILE: cannot read {env_file}: {exc.strerror}"
        ) from exc
    merged = {**file_values, **source}  # the process environment wins over the file
    values = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in merged.items()
        if k.startswith(ENV_PREFIX) and k != f"{ENV_PREFIX}ENV_FILE"
    }
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        name = f"{ENV_PREFIX}{str(loc[0]).upper()}" if loc else "configuration"
        msg = str(first["msg"]).removeprefix("Value error, ")
        if not loc:
            raise SettingsError(msg) from exc
        raise SettingsError(f"{name}: {msg}") from exc


def _read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (what cloud-init writes); comments and blanks skipped."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out
