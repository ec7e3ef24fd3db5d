"""Table tests for the reservation resolver: precedence, zero/false, provenance, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest

from control_plane.demand.reservations import LayerKind, ResourceRequirements
from control_plane.demand.resolver import (
    PLATFORM_SEED,
    Layer,
    RequirementsError,
    parse_requirements,
    resolve,
)

FIELDS = {
    # field (camelCase), a value that differs from the defaults, where it lands
    "minVcpu": (3, "cpu_millis", 3000),
    "minMemoryGb": (6, "memory_mb", 6 * 1024),
    "minDiskGb": (100, "disk_mb", 100 * 1024),
    "exclusiveNode": (True, "exclusive_node", True),
    "maxCoTenants": (2, "max_co_tenants", 2),
}
USER_LAYERS: list[LayerKind] = [k for k in LayerKind if k is not LayerKind.PLATFORM]


def layer(kind: LayerKind, raw: dict[str, Any]) -> Layer:
    """Stored layers at version 3; the task's own requirements have no version."""
    version = None if kind is LayerKind.TASK else 3
    return Layer(kind, f"{kind.value}-1", parse_requirements(kind, raw), version)


def test_all_layers_empty_gives_platform_defaults() -> None:
    res = resolve([layer(k, {}) for k in USER_LAYERS])
    r = res.reservation
    assert (r.cpu_millis, r.memory_mb, r.disk_mb) == (2000, 4096, 40960)
    assert (r.exclusive_node, r.max_co_tenants, r.version) == (False, 4, 2)
    assert (r.source, r.source_id, r.source_version) == (LayerKind.PLATFORM, "platform", 1)
    assert {p.layer for p in res.provenance.values()} == {LayerKind.PLATFORM}


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("winner", USER_LAYERS)
def test_each_layer_wins_each_field(winner: LayerKind, field: str) -> None:
    value, attr, expected = FIELDS[field]
    # Every lower-priority layer also sets the field (to another value); the winner's holds.
    layers = []
    for kind in USER_LAYERS:
        idx, win_idx = USER_LAYERS.index(kind), USER_LAYERS.index(winner)
        if idx == win_idx:
            layers.append(layer(kind, {field: value}))
        elif idx > win_idx:
            other = 1 if field == "maxCoTenants" else (False if field == "exclusiveNode" else 1)
            layers.append(layer(kind, {field: other}))
        else:
            layers.append(layer(kind, {}))
    res = resolve(layers)
    assert getattr(res.reservation, attr) == expected
    assert res.provenance[_snake(field)].layer is winner
    assert res.provenance[_snake(field)].layer_id == f"{winner.value}-1"
    assert res.provenance[_snake(field)].version == (None if winner is LayerKind.TASK else 3)
    assert res.reservation.source is winner
    assert res.reservation.source_id == f"{winner.value}-1"


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


@pytest.mark.parametrize(
    ("raw", "attr", "expected"),
    [
        ({"minVcpu": 0}, "cpu_millis", 0),
        ({"minMemoryGb": 0}, "memory_mb", 0),
        ({"minDiskGb": 0}, "disk_mb", 0),
        ({"exclusiveNode": False}, "exclusive_node", False),
    ],
)
def test_zero_and_false_count_as_defined(raw: dict[str, Any], attr: str, expected: Any) -> None:
    # The task says 0/false; the project says otherwise; the task's value must win.
    project = {"minVcpu": 8, "minMemoryGb": 8, "minDiskGb": 80, "exclusiveNode": True}
    res = resolve([layer(LayerKind.TASK, raw), layer(LayerKind.PROJECT, project)])
    assert getattr(res.reservation, attr) == expected
    assert res.reservation.source is LayerKind.TASK


def test_source_is_highest_layer_that_contributed_and_provenance_is_per_field() -> None:
    res = resolve(
        [
            layer(LayerKind.USER, {"minVcpu": 4}),
            layer(LayerKind.PROJECT, {"minMemoryGb": 16}),
            layer(LayerKind.TRIGGER, {}),
        ]
    )
    assert res.reservation.source is LayerKind.PROJECT
    assert res.reservation.source_id == "project-1"
    assert res.reservation.source_version == 3
    platform = {"layer": "platform", "layerId": "platform", "version": 1}
    assert res.provenance_json() == {
        "minVcpu": {"layer": "user", "layerId": "user-1", "version": 3},
        "minMemoryGb": {"layer": "project", "layerId": "project-1", "version": 3},
        "minDiskGb": platform,
        "exclusiveNode": platform,
        "maxCoTenants": platform,
    }


def test_units_fractional_vcpu_and_memory() -> None:
    res = resolve([layer(LayerKind.TASK, {"minVcpu": 0.5, "minMemoryGb": 1.5})])
    assert res.reservation.cpu_millis == 500
    assert res.reservation.memory_mb == 1536


def test_json_is_camel_case() -> None:
    res = resolve([layer(LayerKind.TASK, {"minVcpu": 1})])
    assert res.reservation.to_json_dict() == {
        "cpuMillis": 1000,
        "memoryMb": 4096,
        "diskMb": 40960,
        "exclusiveNode": False,
        "maxCoTenants": 4,
        "source": "task",
        "sourceId": "task-1",
        "sourceVersion": None,
        "version": 2,
    }
    assert ResourceRequirements(min_vcpu=1).to_json_dict() == {"minVcpu": 1.0}


@pytest.mark.parametrize(
    ("kind", "raw", "field", "problem"),
    [
        (LayerKind.TASK, {"minVcpu": -1}, "minVcpu", "greater than or equal"),
        (LayerKind.PROJECT, {"minMemoryGb": math.inf}, "minMemoryGb", "finite"),
        (LayerKind.USER, {"minDiskGb": math.nan}, "minDiskGb", "finite"),
        (LayerKind.TRIGGER, {"minVcpu": 1025}, "minVcpu", "less than or equal"),
        (LayerKind.TASK, {"minMemoryGb": 16 * 1024 + 1}, "minMemoryGb", "less than or equal"),
        (LayerKind.TASK, {"minDiskGb": 64 * 1024 + 1}, "minDiskGb", "less than or equal"),
        (LayerKind.AGENT_PROFILE, {"maxCoTenants": 0}, "maxCoTenants", "greater than or equal"),
        (LayerKind.USER, {"minCpu": 2}, "minCpu", "unknown field"),
        (LayerKind.TASK, {"minVcpu": "2"}, "minVcpu", "valid number"),
        (LayerKind.TASK, {"exclusiveNode": 1}, "exclusiveNode", "valid boolean"),
        (LayerKind.TASK, {"maxCoTenants": 1.5}, "maxCoTenants", "valid integer"),
    ],
)
def test_validation_errors_name_layer_and_field(
    kind: LayerKind, raw: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(RequirementsError) as info:
        parse_requirements(kind, raw)
    err = info.value
    assert (err.layer, err.field) == (kind, field)
    assert problem in err.problem
    assert kind.value in str(err) and field in str(err)


def test_absurd_limits_themselves_are_allowed() -> None:
    req = parse_requirements(
        LayerKind.TASK, {"minVcpu": 1024, "minMemoryGb": 16384, "minDiskGb": 65536}
    )
    assert req.min_vcpu == 1024


def test_a_layer_kind_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        resolve([layer(LayerKind.TASK, {}), layer(LayerKind.TASK, {})])


def test_a_stored_platform_layer_is_the_last_word() -> None:
    stored = Layer(
        LayerKind.PLATFORM,
        "platform",
        parse_requirements(
            LayerKind.PLATFORM,
            {
                "minVcpu": 1,
                "minMemoryGb": 2,
                "minDiskGb": 20,
                "exclusiveNode": True,
                "maxCoTenants": 2,
            },
        ),
        7,
    )
    res = resolve([layer(LayerKind.PROJECT, {"minVcpu": 3})], stored)
    assert (res.reservation.cpu_millis, res.reservation.memory_mb) == (3000, 2048)
    assert res.reservation.exclusive_node is True
    assert res.provenance["min_memory_gb"].version == 7
    assert res.provenance_json()["maxCoTenants"] == {
        "layer": "platform",
        "layerId": "platform",
        "version": 7,
    }


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        (
            Layer(LayerKind.PLATFORM, "p", parse_requirements(LayerKind.PLATFORM, {"minVcpu": 1})),
            "every field",
        ),
        (Layer(LayerKind.PROJECT, "p", PLATFORM_SEED.requirements), "has kind project"),
    ],
)
def test_an_incomplete_or_mislabelled_platform_layer_is_refused(
    platform: Layer, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve([], platform)
    with pytest.raises(ValueError, match="as `platform`"):
        resolve([PLATFORM_SEED])
