"""Node creation and the bootstrap decision: pure functions of their inputs.

- ``NodeRequest``: what an admin asks for (``POST /api/nodes``);
- ``new_bootstrap_token``/``token_digest``: a single-use secret and what is stored of it;
- ``bootstrap_verdict``: accept, or which 401 to give (wrong, expired, spent);
- ``user_data_params``: the cloud_init parameters for a node, with the artifacts' URLs and
  hashes from the manifest.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud_init import UserDataParams, validate_params
from cloud_init.fields import check_label
from cloud_init.params import DEFAULT_PORT, SwapSettings
from control_plane.provisioning.artifacts.manifest import Manifest
from control_plane.storage.provisioning_store import BootstrapRecord

TOKEN_BYTES = 32
ARTIFACTS_PATH = "/artifacts"


class NodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # Chosen by the control plane unless given.
    node_id: str | None = None
    hostname: str | None = None
    # Catalog names to install from the bundle; default: every agent in it.
    agents: list[str] | None = None
    swap: SwapSettings = SwapSettings()
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    # The node daemon's bound on an agent's initialize plus session/new (default 60 s).
    agent_start_timeout_s: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("node_id", "hostname")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return None if value is None else check_label(value, "a name")


class UnknownAgents(ValueError):
    pass


def new_node_id() -> str:
    return f"node-{secrets.token_hex(6)}"


def new_bootstrap_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REFUSED = "bootstrap token refused"  # no such node, or not its token
    EXPIRED = "bootstrap token expired"
    SPENT = "bootstrap token already used"


def bootstrap_verdict(record: BootstrapRecord | None, presented: str, now: float) -> Verdict:
    """Only the holder of the right token learns whether it expired or was spent."""
    if record is None:
        return Verdict.REFUSED
    if not hmac.compare_digest(record.token_sha256, token_digest(presented)):
        return Verdict.REFUSED
    if record.spent:
        return Verdict.SPENT
    if now >= record.expires_at:
        return Verdict.EXPIRED
    return Verdict.ACCEPT


def chosen_agents(requested: Sequence[str] | None, manifest: Manifest) -> tuple[str, ...]:
    available = manifest.agents.agents if manifest.agents is not None else ()
    if requested is None:
        return tuple(available)
    if missing := sorted(set(requested) - set(available)):
        raise UnknownAgents(
            f"agents {missing} are not in the built bundle (it has {list(available)})"
        )
    return tuple(dict.fromkeys(requested))


def artifact_url(public_url: str, file: str) -> str:
    return f"{public_url}{ARTIFACTS_PATH}/{file}"


def user_data_params(
    *,
    node_id: str,
    hostname: str,
    public_url: str,
    jwks_url: str,
    token: str,
    manifest: Manifest,
    agents: tuple[str, ...],
    request: NodeRequest,
    ca_certificate: str | None,
) -> UserDataParams:
    """Raises cloud_init's InvalidParameter when a value cannot go in user-data."""
    bundle = None
    if agents:
        assert manifest.agents is not None  # chosen_agents checked
        bundle = {
            "bundle": {
                "url": artifact_url(public_url, manifest.agents.file),
                "sha256": manifest.agents.sha256,
            },
            "names": agents,
        }
    return validate_params(
        {
            "node_id": node_id,
            "hostname": hostname,
            "control_plane_url": public_url,
            "jwks_url": jwks_url,
            "bootstrap_token": token,
            "wheelhouse": {
                "url": artifact_url(public_url, manifest.wheelhouse.file),
                "sha256": manifest.wheelhouse.sha256,
            },
            "agents": bundle,
            "port": request.port,
            "swap": request.swap,
            "ca_certificate": ca_certificate,
            "agent_start_timeout_s": request.agent_start_timeout_s,
        }
    )
