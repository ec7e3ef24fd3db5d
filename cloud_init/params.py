"""The validated parameters of a VM's user-data, and the swap settings read from the environment.

There is deliberately no field for a cloud provider's credential: the callback token is
the only secret a VM receives (DESIGN.md section 5).
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

SWAP_SIZE_MB_MAX = 65536
SWAP_SIZE_MB_DEFAULT = 2048
SWAPPINESS_MAX = 100
SWAPPINESS_DEFAULT = 60
DEFAULT_PORT = 8080

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


class UserDataParams(BaseModel):
    model_config = _STRICT

    node_id: str
    hostname: str
    control_plane_url: str
    jwks_url: str
    callback_token: SecretStr
    # After control_plane_url: its validator compares a wheel URL's host with it.
    agent_package: str
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    swap: SwapSettings = SwapSettings()

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

    @field_validator("callback_token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        fields.check_token(value.get_secret_value())
        return value

    @field_validator("agent_package")
    @classmethod
    def _package(cls, value: str, info: ValidationInfo) -> str:
        plane = info.data.get("control_plane_url")
        return fields.check_agent_package(value, plane if isinstance(plane, str) else None)


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
        return UserDataParams.model_validate(dict(data))
    except ValidationError as exc:
        raise _first_error(exc) from None


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
