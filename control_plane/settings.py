"""Control plane settings, from the environment (prefix CONTROL_PLANE_)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

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


def check_github_url(url: str) -> str:
    """https, or plain http to a loopback address (a stand-in): tokens cross this link."""
    parts = urlsplit(url)
    loopback = parts.hostname in ("localhost", "::1") or (parts.hostname or "").startswith("127.")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("must be an https URL (plain http only on loopback)")
    if not parts.hostname or parts.query or parts.fragment:
        raise ValueError("must be a base URL: scheme, host, optional port and path")
    return url.rstrip("/")


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
    # The viewer token `POST /api/tasks/{id}/connection` gives a task's owner (the ACP
    # gateway's `--task`): short, since the gateway asks again when the daemon closes it
    # (4001); capped at the longest of the TTLs above (how long keys stay published).
    task_connection_token_ttl_s: int = Field(default=900, gt=0)
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
    # An event whose data (as JSON text) is larger is refused (413; the daemon's outbox
    # then skips that one event).
    max_event_data_bytes: int = Field(default=256 * 1024, gt=0)
    # What one node's stored events may take in all (data, type and session id); a batch
    # that would go past it is refused whole (413). None: no bound.
    max_node_event_bytes: int | None = Field(default=1024**3, gt=0)

    # The HTTP server: a connection that has not sent a whole request's headers within
    # header_timeout_s (or stays idle between requests that long) is closed, and past
    # max_connections open connections new requests get 503.
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # A request body (JSON) not received whole within this long is a 408.
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_connections: int = Field(default=1000, gt=0)

    # Provisioning: what VMs install (`artifacts build --out` this directory; default
    # state_dir/artifacts), the single-use bootstrap token's life, node certificates.
    artifacts_dir: Path | None = None
    bootstrap_token_ttl_s: int = Field(default=1800, gt=0)
    # Node certificates name `{node_id}.{node_domain}`; the CA is constrained to it.
    node_domain: str = "nodes.vm-agent.internal"
    # Short, because viewers cannot ask whether a certificate the CA signed is still the
    # node's: an earlier one (or a stolen one) passes for them until it expires. Renewed at
    # two-thirds, so a node rides out about 4.7 days of an unreachable control plane.
    node_cert_ttl_s: int = Field(default=14 * 24 * 3600, gt=0)
    # PEM of the CA that signed this control plane's own certificate, when no public CA
    # did: VMs trust it through cloud-config `ca_certs`.
    user_data_ca_file: Path | None = None
    # Serve HTTPS with these (PEM); a VM refuses a non-loopback plain-http control plane.
    # The key that seals secrets kept for others (provider credentials): base64 of 32
    # bytes, 0600; every replica must be given the same one. Unset: made under STATE_DIR.
    secrets_key_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    # The GitHub App the control plane acts as (docs/control-plane.md, GitHub). Its private
    # key (PEM) comes from a file only its owner may read, or from this setting; it is never
    # stored in the database, logged or answered.
    github_api_url: str = "https://api.github.com"
    github_app_id: int | None = Field(default=None, gt=0)
    github_app_private_key_file: Path | None = None
    github_app_private_key: SecretStr | None = None
    # Calls to GitHub: attempts on 5xx, 429 and network errors, and the longest wait between.
    github_attempts: int = Field(default=4, ge=1, le=10)
    github_max_wait_s: float = Field(default=8.0, ge=0)
    # A task's repository: nodes clone `{github_git_url}/owner/name.git`; its commits carry
    # this author, by default the App's bot (`<slug>[bot]`, `<app id>+<slug>[bot]@users.
    # noreply.github.com`: set the App's slug, or the name and email outright).
    github_git_url: str = "https://github.com"
    github_app_slug: str = Field(default="vm-agent", pattern=r"^[a-z0-9][a-z0-9-]{0,33}$")
    github_commit_author_name: str | None = Field(default=None, min_length=1, max_length=255)
    github_commit_author_email: str | None = Field(default=None, pattern=r"^[^\s<>@]+@[^\s<>@]+$")

    @field_validator("github_api_url", "github_git_url")
    @classmethod
    def _github_url(cls, value: str) -> str:
        return check_github_url(value)

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
