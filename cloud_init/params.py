"""The validated parameters of a VM's user-data, and the swap settings read from the environment.

There is deliberately no field for a cloud provider's credential, nor for the callback
token: the only secret in user-data is the single-use bootstrap token (docs/callback-api.md),
because user-data can be read back from a cloud's metadata service.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from cloud_init import fields
from cloud_init.agents import AGENT_PACKAGES

SWAP_SIZE_MB_MAX = 65536
SWAP_SIZE_MB_DEFAULT = 2048
SWAPPINESS_MAX = 100
SWAPPINESS_DEFAULT = 60
DEFAULT_PORT = 8080
# Contract 2 (the agents' users): vm-agent's own defaults.
AGENT_USERS_DEFAULT = 16
AGENT_USERS_MAX = 1024
AGENT_UID_BASE_DEFAULT = 61000
AGENT_UID_BASE_MAX = 2**31 - 1 - AGENT_USERS_MAX

_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid")


class InvalidParameter(ValueError):
    """A value was refused; ``field`` names it, ``reason`` says why (never the value)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SwapSettings(BaseModel):
    """Swap file size in MiB (0 disables swap) and ``vm.swappiness``."""

    model_config = _STRICT

    size_mb: int = Field(default=SWAP_SIZE_MB_DEFAULT, ge=0, le=SWAP_SIZE_MB_MAX)
    swappiness: int = Field(default=SWAPPINESS_DEFAULT, ge=0, le=SWAPPINESS_MAX)

    @property
    def enabled(self) -> bool:
        return self.size_mb > 0


class Artifact(BaseModel):
    """A file the VM downloads from the control plane and checks against ``sha256``."""

    model_config = _STRICT

    url: str
    sha256: str

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return fields.check_artifact_url(value, None)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        return fields.check_sha256(value)


class AgentsInstall(BaseModel):
    """The agent bundle and the catalog names to install from it (at least one)."""

    model_config = _STRICT

    bundle: Artifact
    names: tuple[str, ...] = Field(min_length=1)

    @field_validator("names")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if set(value) - set(AGENT_PACKAGES):
            installable = ", ".join(sorted(AGENT_PACKAGES))
            raise ValueError(
                f"names an agent the bundle cannot install; installable: {installable}"
            )
        if len(set(value)) != len(value):
            raise ValueError("names an agent twice")
        return value


class AgentUsers(BaseModel):
    """The agents' user pool (docs/containment.md): uids ``uid_base .. uid_base + count - 1``."""

    model_config = _STRICT

    count: int = Field(default=AGENT_USERS_DEFAULT, ge=1, le=AGENT_USERS_MAX)
    uid_base: int = Field(default=AGENT_UID_BASE_DEFAULT, ge=1000, le=AGENT_UID_BASE_MAX)

    @property
    def last_uid(self) -> int:
        return self.uid_base + self.count - 1


class UserDataParams(BaseModel):
    model_config = _STRICT

    node_id: str
    hostname: str
    control_plane_url: str
    jwks_url: str
    bootstrap_token: SecretStr
    # After control_plane_url: the artifacts' validators compare their host with it.
    wheelhouse: Artifact
    agents: AgentsInstall | None = None
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    swap: SwapSettings = SwapSettings()
    agent_users: AgentUsers = AgentUsers()
    # The CA that signed the control plane's certificate, when no public CA did.
    ca_certificate: str | None = None
    # The daemon's bound on an agent's initialize plus session/new (its default: 60 s); a
    # cold, emulated VM's first start of a large agent can take longer.
    agent_start_timeout_s: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        return fields.check_label(value, "a node id")

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return fields.check_label(value, "a hostname")

    @field_validator("control_plane_url", "jwks_url")
    @classmethod
    def _url(cls, value: str) -> str:
        fields.check_url(value)
        return value

    @field_validator("bootstrap_token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        fields.check_bootstrap_token(value.get_secret_value())
        return value

    @field_validator("wheelhouse")
    @classmethod
    def _wheelhouse(cls, value: Artifact, info: ValidationInfo) -> Artifact:
        return _on_the_plane(value, info)

    @field_validator("agents")
    @classmethod
    def _agents(cls, value: AgentsInstall | None, info: ValidationInfo) -> AgentsInstall | None:
        if value is not None:
            _on_the_plane(value.bundle, info)
        return value

    @field_validator("ca_certificate")
    @classmethod
    def _ca(cls, value: str | None) -> str | None:
        return None if value is None else fields.check_ca_certificate(value)


def _on_the_plane(artifact: Artifact, info: ValidationInfo) -> Artifact:
    plane = info.data.get("control_plane_url")
    fields.check_artifact_url(artifact.url, plane if isinstance(plane, str) else None)
    return artifact


def _first_error(exc: ValidationError) -> InvalidParameter:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "parameters"
    reason = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        reason = "no such parameter"
    return InvalidParameter(field, reason)


def validate_params(data: Mapping[str, object]) -> UserDataParams:
    """Build the parameters, raising :class:`InvalidParameter` for the first bad field."""
    try:
        params = UserDataParams.model_validate(dict(data))
    except ValidationError as exc:
        raise _first_error(exc) from None
    _token_only_in_its_field(params)
    return params


def _token_only_in_its_field(params: UserDataParams) -> None:
    """The bootstrap token pasted into another field would land outside its 0600 file."""
    token = params.bootstrap_token.get_secret_value()
    texts = {
        "node_id": params.node_id,
        "hostname": params.hostname,
        "control_plane_url": params.control_plane_url,
        "jwks_url": params.jwks_url,
        "wheelhouse.url": params.wheelhouse.url,
        "agents.bundle.url": params.agents.bundle.url if params.agents else "",
        "ca_certificate": params.ca_certificate or "",
    }
    for name, text in texts.items():
        if token in text:
            raise InvalidParameter(name, "holds the bootstrap token")


def number_from_text(field: str, text: str, high: int, low: int = 0) -> int:
    try:
        return fields.parse_whole_number(text, low, high)
    except ValueError as exc:
        raise InvalidParameter(field, str(exc)) from None


def params_from_env(env: Mapping[str, str]) -> SwapSettings:
    """``SWAP_SIZE_MB`` (0..65536, default 2048) and ``SWAP_SWAPPINESS`` (0..100, default 60).

    Strictly numeric: a sign, spaces or a trailing newline are refused, naming the variable.
    """
    size = env.get("SWAP_SIZE_MB")
    swappiness = env.get("SWAP_SWAPPINESS")
    return SwapSettings(
        size_mb=SWAP_SIZE_MB_DEFAULT
        if size is None
        else number_from_text("SWAP_SIZE_MB", size, SWAP_SIZE_MB_MAX),
        swappiness=SWAPPINESS_DEFAULT
        if swappiness is None
        else number_from_text("SWAP_SWAPPINESS", swappiness, SWAPPINESS_MAX),
    )
