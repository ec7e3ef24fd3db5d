"""Reservation types: what users ask for and what a scheduler consumes.

JSON uses camelCase field names (`minVcpu`, `cpuMillis`, `sourceId`) because the
audit JSON is read by the rest of the platform in that shape.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# 2: `sourceVersion` (the version of the stored layer `source` names) was added.
RESERVATION_VERSION = 2

# Upper bounds past which a request is a mistake, not a machine.
MAX_VCPU = 1024.0
MAX_MEMORY_GB = 16 * 1024.0  # 16 TB
MAX_DISK_GB = 64 * 1024.0  # 64 TB
MAX_CO_TENANTS = 1024


class LayerKind(StrEnum):
    """Where a requirement came from, in precedence order (first wins)."""

    TASK = "task"
    TRIGGER = "trigger"
    AGENT_PROFILE = "agent_profile"
    PROJECT = "project"
    USER = "user"
    PLATFORM = "platform"


LAYER_PRECEDENCE: tuple[LayerKind, ...] = tuple(LayerKind)

_camel = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)


class ResourceRequirements(BaseModel):
    """What a user says; every field optional (absent means "not defined here")."""

    model_config = ConfigDict(
        **_camel, extra="forbid", strict=True, allow_inf_nan=False, frozen=True
    )

    min_vcpu: Annotated[float, Field(ge=0, le=MAX_VCPU)] | None = None
    min_memory_gb: Annotated[float, Field(ge=0, le=MAX_MEMORY_GB)] | None = None
    min_disk_gb: Annotated[float, Field(ge=0, le=MAX_DISK_GB)] | None = None
    exclusive_node: bool | None = None
    # The most other tenants (workspaces) the node may hold while this one runs there.
    max_co_tenants: Annotated[int, Field(ge=1, le=MAX_CO_TENANTS)] | None = None

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, exclude_none=True)

    def missing(self) -> list[str]:
        """The fields this layer leaves undefined (camelCase)."""
        return [
            ResourceRequirements.model_fields[name].alias or name
            for name in ResourceRequirements.model_fields
            if getattr(self, name) is None
        ]


REQUIREMENT_FIELDS: tuple[str, ...] = tuple(ResourceRequirements.model_fields)

# What migration 0005 stored as version 1 of the platform layer; the stored layer is the
# one in force (admins change it through the API).
PLATFORM_LAYER_ID = "platform"
PLATFORM_DEFAULTS = ResourceRequirements(
    min_vcpu=2,
    min_memory_gb=4,
    min_disk_gb=40,
    exclusive_node=False,
    max_co_tenants=4,
)


class ResolvedResourceReservation(BaseModel):
    """What a scheduler consumes: whole units (millicores, MB) and where they came from."""

    model_config = ConfigDict(**_camel, extra="forbid", frozen=True)

    cpu_millis: int
    memory_mb: int
    disk_mb: int
    exclusive_node: bool
    max_co_tenants: int
    source: LayerKind
    source_id: str | None
    source_version: int | None
    version: int = RESERVATION_VERSION

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, mode="json")


class FieldProvenance(BaseModel):
    """Which layer gave one field of a reservation (for audits): its kind, id and version
    (None for the task's own requirements, which are not stored defaults)."""

    model_config = ConfigDict(**_camel, frozen=True)

    layer: LayerKind
    layer_id: str | None
    version: int | None
