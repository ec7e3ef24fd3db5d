"""Stored defaults of each layer: projects, users, agent profiles, triggers, the platform.

Every change is a new row with the next version; the newest is the one in force, and a
task's provenance names the version it ran under, which stays readable. Who may change a
layer is decided by `change_refusal` (pure); storage is synchronous SQLAlchemy Core.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, insert, select
from sqlalchemy.exc import IntegrityError

from control_plane.demand.reservations import PLATFORM_LAYER_ID, LayerKind, ResourceRequirements
from control_plane.demand.resolver import Layer, parse_requirements
from control_plane.storage.db import layer_defaults as ld

# The stored layers and their names in API paths (/api/defaults/{path}/{id}).
STORED_KINDS: dict[str, LayerKind] = {
    "projects": LayerKind.PROJECT,
    "users": LayerKind.USER,
    "agent-profiles": LayerKind.AGENT_PROFILE,
    "triggers": LayerKind.TRIGGER,
    "platform": LayerKind.PLATFORM,
}
LAYER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_MAX_ATTEMPTS = 5


class LayerError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredDefaults:
    kind: LayerKind
    layer_id: str
    version: int
    requirements: ResourceRequirements
    owner: str
    updated_by: str
    updated_at: float

    def layer(self) -> Layer:
        return Layer(self.kind, self.layer_id, self.requirements, self.version)

    def to_api(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "id": self.layer_id,
            "version": self.version,
            "requirements": self.requirements.to_json_dict(),
            "owner": self.owner,
            "updatedBy": self.updated_by,
            "updatedAt": self.updated_at,
        }


def change_refusal(
    kind: LayerKind, layer_id: str, current_owner: str | None, actor: str, admin: bool
) -> str | None:
    """Why `actor` may not change this layer; None if they may.

    The platform layer is the admins'. A user's layer is that user's. A project, agent
    profile or trigger belongs to whoever stored its first version."""
    if admin:
        return None
    if kind is LayerKind.PLATFORM:
        return "forbidden: only an admin may change the platform defaults"
    if kind is LayerKind.USER:
        return None if layer_id == actor else "forbidden: a user's defaults are that user's"
    if current_owner is not None and current_owner != actor:
        return f"forbidden: {kind.value} {layer_id!r} belongs to another user"
    return None


def check_layer_id(kind: LayerKind, layer_id: str) -> None:
    if not LAYER_ID.fullmatch(layer_id):
        raise LayerError(422, f"{kind.value} id must be 1-128 of [A-Za-z0-9._:@-]")
    if kind is LayerKind.PLATFORM and layer_id != PLATFORM_LAYER_ID:
        raise LayerError(404, f"the platform layer's id is {PLATFORM_LAYER_ID!r}")


def _stored(row: RowMapping) -> StoredDefaults:
    kind = LayerKind(row["kind"])
    return StoredDefaults(
        kind=kind,
        layer_id=row["layer_id"],
        version=row["version"],
        requirements=parse_requirements(kind, json.loads(row["requirements_json"])),
        owner=row["owner"],
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


def current(conn: Connection, kind: LayerKind, layer_id: str) -> StoredDefaults | None:
    row = (
        conn.execute(
            select(ld)
            .where(ld.c.kind == kind.value, ld.c.layer_id == layer_id)
            .order_by(ld.c.version.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return None if row is None else _stored(row)


def get_defaults(
    engine: Engine, kind: LayerKind, layer_id: str, version: int | None = None
) -> StoredDefaults | None:
    with engine.connect() as conn:
        if version is None:
            return current(conn, kind, layer_id)
        row = (
            conn.execute(
                select(ld).where(
                    ld.c.kind == kind.value, ld.c.layer_id == layer_id, ld.c.version == version
                )
            )
            .mappings()
            .first()
        )
    return None if row is None else _stored(row)


def put_defaults(
    engine: Engine,
    kind: LayerKind,
    layer_id: str,
    raw: Mapping[str, Any] | None,
    *,
    actor: str,
    admin: bool,
    now: float,
    expected_version: int | None = None,
) -> StoredDefaults:
    """Store a new version of a layer's defaults (RequirementsError names a bad field;
    LayerError carries the HTTP status: 403 not yours, 409 not at `expected_version`)."""
    check_layer_id(kind, layer_id)
    requirements: ResourceRequirements | None = None
    for _ in range(_MAX_ATTEMPTS):
        with engine.connect() as conn:
            now_stored = current(conn, kind, layer_id)
        owner = now_stored.owner if now_stored is not None else None
        if why := change_refusal(kind, layer_id, owner, actor, admin):
            raise LayerError(403, why)
        if requirements is None:  # after the permission check: a stranger learns nothing
            requirements = parse_requirements(kind, raw)
            if kind is LayerKind.PLATFORM and (missing := requirements.missing()):
                raise LayerError(
                    422, f"the platform defaults must define every field; missing {missing}"
                )
        version = 1 if now_stored is None else now_stored.version + 1
        if expected_version is not None and expected_version != version - 1:
            raise LayerError(
                409,
                f"{kind.value} {layer_id!r} is at version {version - 1}, not {expected_version}",
            )
        made = StoredDefaults(kind, layer_id, version, requirements, owner or actor, actor, now)
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(ld).values(
                        kind=kind.value,
                        layer_id=layer_id,
                        version=version,
                        requirements_json=json.dumps(requirements.to_json_dict()),
                        owner=made.owner,
                        updated_by=actor,
                        updated_at=now,
                    )
                )
            return made
        except IntegrityError:
            continue  # a concurrent change took this version: look again
    raise LayerError(409, f"{kind.value} {layer_id!r} is changing too often; try again")
