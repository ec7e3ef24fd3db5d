"""Task submission: resolve a task's reservation and store the audit columns.

Placement is not changed by this (audit only): the stored placement explanation is empty.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from control_plane.capacity import (
    PROVIDER_CAPACITY,
    SIZE_ORDER,
    UnknownProviderError,
    pick_size,
    shortfalls,
)
from control_plane.db import tasks
from control_plane.reservations import LayerKind
from control_plane.resolver import Layer, parse_requirements, resolve

_camel = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)

VM_SIZE_FROM_TASK = "task"  # the task asked for a size explicitly
VM_SIZE_FROM_RESERVATION = "reservation"  # smallest size that fits the resolved reservation


class LayerDefaults(BaseModel):
    model_config = ConfigDict(**_camel, extra="forbid")

    id: str | None = None
    requirements: dict[str, Any] | None = None


class TaskSubmission(BaseModel):
    """A task with its own requirements and every layer's defaults (raw JSON objects)."""

    model_config = ConfigDict(**_camel, extra="forbid")

    task_id: str | None = None
    provider: str | None = None
    vm_size: str | None = None
    requirements: dict[str, Any] | None = None
    trigger: LayerDefaults | None = None
    agent_profile: LayerDefaults | None = None
    project: LayerDefaults | None = None
    user: LayerDefaults | None = None


class TaskRecord(BaseModel):
    model_config = ConfigDict(**_camel)

    task_id: str
    provider: str
    requested_vm_size: str
    vm_size_source: str
    requirements: dict[str, Any] | None
    reservation: dict[str, Any]
    provenance: dict[str, Any]
    placement_explanation: str = ""


class TaskError(ValueError):
    """A submission that cannot be planned (bad size, nothing fits)."""


class TaskExistsError(ValueError):
    pass


def plan_task(sub: TaskSubmission, default_provider: str) -> TaskRecord:
    """Resolve the reservation and the VM size. Pure; raises RequirementsError or TaskError."""
    given = {
        LayerKind.TASK: LayerDefaults(id=sub.task_id, requirements=sub.requirements),
        LayerKind.TRIGGER: sub.trigger,
        LayerKind.AGENT_PROFILE: sub.agent_profile,
        LayerKind.PROJECT: sub.project,
        LayerKind.USER: sub.user,
    }
    task_id = sub.task_id or uuid.uuid4().hex
    layers = [
        Layer(
            kind,
            d.id if kind is not LayerKind.TASK else task_id,
            parse_requirements(kind, d.requirements),
        )
        for kind, d in given.items()
        if d is not None
    ]
    resolution = resolve(layers)
    res = resolution.reservation
    provider = sub.provider or default_provider
    if provider not in PROVIDER_CAPACITY:
        raise TaskError(str(UnknownProviderError(provider)))
    if sub.vm_size is not None:
        if sub.vm_size not in SIZE_ORDER:
            raise TaskError(f"vmSize must be one of {list(SIZE_ORDER)}, got {sub.vm_size!r}")
        lacks = shortfalls(PROVIDER_CAPACITY[provider][sub.vm_size], res)
        if lacks:
            raise TaskError(f"{provider} {sub.vm_size} does not fit: {'; '.join(lacks)}")
        size, size_source = sub.vm_size, VM_SIZE_FROM_TASK
    else:
        try:
            size = pick_size(provider, res)
        except ValueError as exc:
            raise TaskError(str(exc)) from exc
        size_source = VM_SIZE_FROM_RESERVATION
    return TaskRecord(
        task_id=task_id,
        provider=provider,
        requested_vm_size=size,
        vm_size_source=size_source,
        requirements=sub.requirements,
        reservation=res.to_json_dict(),
        provenance=resolution.provenance_json(),
        placement_explanation="",
    )


def store_task(engine: Engine, record: TaskRecord, now: float) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(tasks).values(
                    task_id=record.task_id,
                    provider=record.provider,
                    requested_vm_size=record.requested_vm_size,
                    vm_size_source=record.vm_size_source,
                    requirements_json=json.dumps(record.requirements),
                    reservation_json=json.dumps(record.reservation),
                    reservation_provenance_json=json.dumps(record.provenance),
                    placement_explanation=record.placement_explanation,
                    created_at=now,
                )
            )
    except IntegrityError as exc:
        raise TaskExistsError(f"task {record.task_id!r} exists") from exc


def load_task(engine: Engine, task_id: str) -> TaskRecord | None:
    with engine.connect() as conn:
        row = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).mappings().first()
    if row is None:
        return None
    return TaskRecord(
        task_id=row["task_id"],
        provider=row["provider"],
        requested_vm_size=row["requested_vm_size"],
        vm_size_source=row["vm_size_source"],
        requirements=json.loads(row["requirements_json"]),
        reservation=json.loads(row["reservation_json"]),
        provenance=json.loads(row["reservation_provenance_json"]),
        placement_explanation=row["placement_explanation"],
    )


def submit_task(
    engine: Engine, sub: TaskSubmission, default_provider: str, now: float
) -> TaskRecord:
    """Plan and store a task (audit only; placement is untouched)."""
    record = plan_task(sub, default_provider)
    store_task(engine, record, now)
    return record
