"""The daemon's configuration (DESIGN.md section 6): ``VM_AGENT_*`` variables and an env file.

A bad value stops the daemon at start with one line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "VM_AGENT_"
DEFAULT_ENV_FILE = Path("/etc/vm-agent/env")


class SettingsError(Exception):
    """One line for a person: which variable is wrong and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    node_id: str = Field(default="dev-node", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    control_plane_url: str | None = None
    callback_token_file: Path = Path("/etc/vm-agent/callback-token")
    jwks_url: str | None = None
    # The `iss` viewer tokens must carry; defaults to CONTROL_PLANE_URL (the control plane
    # signs with its public base URL as issuer).
    jwt_issuer: str | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=0, le=65535)
    state_dir: Path = Path("/var/lib/vm-agent")
    agents_file: Path | None = None
    prompt_timeout_s: float | None = Field(default=None, gt=0)
    no_output_timeout_s: float | None = Field(default=None, gt=0)
    cancel_grace_s: float = Field(default=5.0, gt=0)
    # Bound on initialize plus session/new (or session/load) of each agent process.
    start_timeout_s: float = Field(default=60.0, gt=0)
    restart_budget: int = Field(default=3, ge=0)
    restart_window_s: float = Field(default=300.0, gt=0)
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

    @field_validator("control_plane_url", "jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

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
    def issuer(self) -> str | None:
        return self.jwt_issuer or self.control_plane_url

    @property
    def event_log_path(self) -> Path:
        return self.state_dir / "events.sqlite3"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Reads the environment and the env file; raises ``SettingsError`` with one line."""
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
        return Settings.model_validate(values)
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
