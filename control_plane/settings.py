"""Control plane settings, from the environment (prefix CONTROL_PLANE_)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The node CA's name constraint: node certificates are issued only beneath this domain.
_DOMAIN = re.compile(
    r"(?=.{1,200}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)


def check_domain(domain: str) -> str:
    if not _DOMAIN.fullmatch(domain):
        raise ValueError("must be a lowercase DNS name with at least two labels")
    return domain


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
    # A SQLAlchemy URL, or a libpq one (postgresql://user:pw@host:port/db, through
    # psycopg 3); default is a SQLite file under state_dir. Replicas share one PostgreSQL.
    database_url: str | None = None
    callback_token_ttl_s: int = Field(default=24 * 3600, gt=0)
    viewer_token_ttl_s: int = Field(default=3600, gt=0)
    user_token_ttl_s: int = Field(default=3600, gt=0)
    heartbeat_interval_s: int = Field(default=30, gt=0)
    # A rotated key is published this long before it starts signing, so verifiers
    # that cache the JWKS see it first.
    key_activation_delay_s: float = Field(default=300.0, ge=0)
    # Each replica caches the signing keys this long (a rotated key is published
    # key_activation_delay_s before it signs, so keep this well below that).
    key_cache_s: float = Field(default=10.0, gt=0)
    # A refreshed callback token revokes the one it replaces this long after the refresh:
    # requests in flight with the old one, and a heartbeat whose answer was lost (it asks
    # again with the old token and gets another), still pass.
    callback_token_revoke_grace_s: float = Field(default=120.0, ge=0)
    default_provider: str = "hetzner"
    # Placement passes over a node not heard from (ready or heartbeat) for this long.
    node_stale_after_s: float = Field(default=120.0, gt=0)
    # Placement asks for a new node only while fewer than this many nodes are known or
    # asked for; past it a task that fits nowhere is refused (422).
    max_nodes: int = Field(default=100, ge=0)
    # Quotas, so that one user (or one project) cannot take the fleet from the others:
    # nodes held (their active workspaces' nodes, and nodes asked for on their behalf
    # that have not reported yet), tasks in flight (active workspaces), sessions not
    # ended. Past one, a submission is refused with 429 naming the quota.
    user_max_nodes: int = Field(default=20, ge=0)
    user_max_tasks: int = Field(default=50, ge=0)
    user_max_sessions: int = Field(default=100, ge=0)
    project_max_nodes: int = Field(default=40, ge=0)
    project_max_tasks: int = Field(default=100, ge=0)

    # Bodies past this size are refused (413) before they are parsed.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    # Provisioning: what VMs install (`artifacts build --out` this directory; default
    # state_dir/artifacts), the single-use bootstrap token's life, node certificates.
    artifacts_dir: Path | None = None
    bootstrap_token_ttl_s: int = Field(default=1800, gt=0)
    # Node certificates name `{node_id}.{node_domain}`; the CA is constrained to it.
    node_domain: str = "nodes.vm-agent.internal"
    node_cert_ttl_s: int = Field(default=90 * 24 * 3600, gt=0)
    # PEM of the CA that signed this control plane's own certificate, when no public CA
    # did: VMs trust it through cloud-config `ca_certs`.
    user_data_ca_file: Path | None = None
    # Serve HTTPS with these (PEM); a VM refuses a non-loopback plain-http control plane.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @field_validator("node_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return check_domain(value)

    @property
    def artifacts_path(self) -> Path:
        return self.artifacts_dir or self.state_dir / "artifacts"

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        # It is compared byte for byte as `iss`; one spelling only.
        return value.rstrip("/")

    @property
    def max_token_ttl_s(self) -> int:
        return max(self.callback_token_ttl_s, self.viewer_token_ttl_s, self.user_token_ttl_s)
