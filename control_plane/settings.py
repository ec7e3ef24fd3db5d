"""Control plane settings, from the environment (prefix CONTROL_PLANE_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControlPlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONTROL_PLANE_", extra="ignore")

    state_dir: Path
    # The base URL; also the `iss` claim of every token minted here.
    public_url: str
    # Dev secret store: JSON {"agent name": {"ENV_VAR": "value"}}.
    secrets_file: Path | None = None
    # Dev secret store from the environment: CONTROL_PLANE_AGENT_SECRETS='{"claude": {...}}'.
    # The secrets file, if set, wins for an agent that both name.
    agent_secrets: dict[str, dict[str, SecretStr]] = Field(default_factory=dict)
    # SQLAlchemy URL; default is a SQLite file under state_dir.
    database_url: str | None = None
    callback_token_ttl_s: int = Field(default=24 * 3600, gt=0)
    viewer_token_ttl_s: int = Field(default=3600, gt=0)
    user_token_ttl_s: int = Field(default=3600, gt=0)
    heartbeat_interval_s: int = Field(default=30, gt=0)
    # A rotated key is published this long before it starts signing, so verifiers
    # that cache the JWKS see it first.
    key_activation_delay_s: float = Field(default=300.0, ge=0)
    default_provider: str = "hetzner"
    # FAULT INJECTION (tests only): answer 500 to every other events batch.
    fault_fail_every_other_events_batch: bool = False
    # FAULT INJECTION (tests only): with the knob above, store the failing batch before
    # answering 500 (a lost acknowledgement) instead of storing nothing.
    fault_store_before_failing: bool = False

    # Bodies past this size are refused (413) before they are parsed.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        # It is compared byte for byte as `iss`; one spelling only.
        return value.rstrip("/")

    @property
    def max_token_ttl_s(self) -> int:
        return max(self.callback_token_ttl_s, self.viewer_token_ttl_s, self.user_token_ttl_s)
