"""The reservation resolver: layered requirements in, reservation with provenance out.

Layers in precedence order: task, trigger, agent profile, project, user, then the
platform defaults (a stored layer too, which must define every field). Each field comes
from the first layer that defines it (0 and false are defined; only an absent field or
null is not). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from control_plane.demand.agent_settings import AgentSettings
from control_plane.demand.reservations import (
    LAYER_PRECEDENCE,
    PLATFORM_DEFAULTS,
    PLATFORM_LAYER_ID,
    REQUIREMENT_FIELDS,
    FieldProvenance,
    LayerKind,
    ResolvedResourceReservation,
    ResourceRequirements,
)


class RequirementsError(ValueError):
    """A layer's requirements are invalid; names the layer and the field."""

    def __init__(self, layer: LayerKind, field_name: str, problem: str) -> None:
        super().__init__(f"{layer.value} requirements: field {field_name!r}: {problem}")
        self.layer = layer
        self.field = field_name
        self.problem = problem


@dataclass(frozen=True)
class Layer:
    kind: LayerKind
    id: str | None = None
    requirements: ResourceRequirements = field(default_factory=ResourceRequirements)
    version: int | None = None  # of stored defaults; None for the task's own
    # The layer's agent settings (resolved by settings_resolver.py, the same precedence).
    settings: AgentSettings = field(default_factory=AgentSettings)


# Version 1 of the stored platform layer (migration 0005 seeds the same values).
PLATFORM_SEED = Layer(LayerKind.PLATFORM, PLATFORM_LAYER_ID, PLATFORM_DEFAULTS, 1)


@dataclass(frozen=True)
class Resolution:
    reservation: ResolvedResourceReservation
    provenance: dict[str, FieldProvenance]

    def provenance_json(self) -> dict[str, object]:
        return {
            ResourceRequirements.model_fields[name].alias or name: p.model_dump(
                by_alias=True, mode="json"
            )
            for name, p in self.provenance.items()
        }


def parse_requirements(layer: LayerKind, raw: Mapping[str, Any] | None) -> ResourceRequirements:
    """Validate one layer's raw JSON object; errors name the layer and field."""
    if raw is None:
        return ResourceRequirements()
    if not isinstance(raw, Mapping):
        raise RequirementsError(layer, "*", "requirements must be a JSON object")
    try:
        return ResourceRequirements.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "*"
        problem = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise RequirementsError(layer, name, problem) from exc


def resolve(layers: list[Layer], platform: Layer = PLATFORM_SEED) -> Resolution:
    """Resolve layers (any order given; at most one of each kind) over the platform layer."""
    if platform.kind is not LayerKind.PLATFORM:
        raise ValueError(f"the platform layer has kind {platform.kind.value}")
    if missing := platform.requirements.missing():
        raise ValueError(f"the platform layer must define every field; it lacks {missing}")
    by_kind: dict[LayerKind, Layer] = {}
    for layer in layers:
        if layer.kind is LayerKind.PLATFORM:
            raise ValueError("pass the platform layer as `platform`")
        if layer.kind in by_kind:
            raise ValueError(f"layer {layer.kind.value} given twice")
        by_kind[layer.kind] = layer
    by_kind[LayerKind.PLATFORM] = platform
    ordered = [by_kind[k] for k in LAYER_PRECEDENCE if k in by_kind]

    values: dict[str, Any] = {}
    provenance: dict[str, FieldProvenance] = {}
    for name in REQUIREMENT_FIELDS:
        for layer in ordered:
            value = getattr(layer.requirements, name)
            if value is not None:
                values[name] = value
                provenance[name] = FieldProvenance(
                    layer=layer.kind, layer_id=layer.id, version=layer.version
                )
                break

    # `source` is the highest-priority layer that gave any field.
    top = min(provenance.values(), key=lambda p: LAYER_PRECEDENCE.index(p.layer))
    reservation = ResolvedResourceReservation(
        cpu_millis=round(values["min_vcpu"] * 1000),
        memory_mb=round(values["min_memory_gb"] * 1024),
        disk_mb=round(values["min_disk_gb"] * 1024),
        exclusive_node=values["exclusive_node"],
        max_co_tenants=values["max_co_tenants"],
        source=top.layer,
        source_id=top.layer_id,
        source_version=top.version,
    )
    return Resolution(reservation=reservation, provenance=provenance)
