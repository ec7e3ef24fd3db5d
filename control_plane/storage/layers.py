"""Stored defaults of each layer: projects, users, agent profiles, triggers, the platform.

A layer holds resource requirements and agent settings (issue 25). Every change is a new
row with the next version (both together); the newest is the one in force, and a task's
provenance names the version it ran under, which stays readable.

Names are scoped per owner: a project, agent profile or trigger is (owner, id), so alice's
`p` and bob's `p` are two layers and nobody can take a name from anyone. A user's own
layer is that user's; the platform layer is the admins'. Another user may read and use
a project, profile or trigger only if an admin shared it with them (`layer_shares`); to
anyone else it does not exist (the same 404 as a name nobody stored). Who may change,
read or use a layer is decided by `change_refusal` and `may_read` (pure); storage is
synchronous SQLAlchemy Core.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, delete, insert, select
from sqlalchemy.exc import IntegrityError

from control_plane.demand.agent_settings import (
    AgentSettings,
    SettingsError,
    check_env,
    parse_settings,
)
from control_plane.demand.reservations import PLATFORM_LAYER_ID, LayerKind, ResourceRequirements
from control_plane.demand.resolver import Layer, parse_requirements
from control_plane.storage.db import layer_defaults as ld
from control_plane.storage.db import layer_shares as shares
from control_plane.storage.secret_names import missing
from vm_agent.process.catalog import builtin_agents

# The stored layers and their names in API paths (/api/defaults/{path}/{id}).
STORED_KINDS: dict[str, LayerKind] = {
    "projects": LayerKind.PROJECT,
    "users": LayerKind.USER,
    "agent-profiles": LayerKind.AGENT_PROFILE,
    "triggers": LayerKind.TRIGGER,
    "platform": LayerKind.PLATFORM,
}
# The kinds whose names are scoped per owner (and may be shared).
SCOPED = frozenset({LayerKind.PROJECT, LayerKind.AGENT_PROFILE, LayerKind.TRIGGER})
PLATFORM_OWNER = "platform"
LAYER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
# How a task names a layer: `id` (the caller's own) or `owner/id` (one shared with them).
LAYER_REF = re.compile(r"(?:([A-Za-z0-9._:@-]{1,128})/)?([A-Za-z0-9._:@-]{1,128})")
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
    agent_settings: AgentSettings = field(default_factory=AgentSettings)

    def layer(self, name: str | None = None) -> Layer:
        """As the resolvers take it; `name` is how the task named it (`owner/id`)."""
        return Layer(
            self.kind, name or self.layer_id, self.requirements, self.version, self.agent_settings
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "id": self.layer_id,
            "version": self.version,
            "requirements": self.requirements.to_json_dict(),
            # MCP servers' env and header values are not shown (they may hold tokens; a
            # shared layer is read by others): names only. A PUT gives the whole again.
            "agentSettings": self.agent_settings.shown(),
            "owner": self.owner,
            "updatedBy": self.updated_by,
            "updatedAt": self.updated_at,
        }


def namespace(kind: LayerKind, layer_id: str, owner: str | None, actor: str) -> str:
    """Whose name `layer_id` is: a user's layer is that user's, the platform's the
    platform's, a project/profile/trigger `owner`'s (the caller's own when not named)."""
    if kind is LayerKind.USER:
        return layer_id
    if kind is LayerKind.PLATFORM:
        return PLATFORM_OWNER
    return owner or actor


def change_refusal(
    kind: LayerKind, layer_id: str, owner: str | None, actor: str, admin: bool
) -> str | None:
    """Why `actor` may not change this layer (`owner`: whose name it is; None: the
    actor's own); None if they may. The platform layer is the admins'. A user's layer is
    that user's. A project, agent profile or trigger: its owner's; an admin may change
    anyone's. Nothing here depends on whether the layer exists."""
    if admin:
        return None
    if kind is LayerKind.PLATFORM:
        return "forbidden: only an admin may change the platform defaults"
    if kind is LayerKind.USER:
        return None if layer_id == actor else "forbidden: a user's defaults are that user's"
    if owner is not None and owner != actor:
        return f"forbidden: a user stores {kind.value} defaults under their own name only"
    return None


def may_read(
    kind: LayerKind, layer_id: str, owner: str, actor: str, *, admin: bool, shared: Iterable[str]
) -> bool:
    """Whether `actor` may read (and use in a task) the layer (`owner`'s `layer_id`).
    Anyone may read the platform layer; a user their own layer; a project, profile or
    trigger its owner and the users an admin shared it with; an admin everything."""
    if admin or kind is LayerKind.PLATFORM:
        return True
    if kind is LayerKind.USER:
        return layer_id == actor
    return owner == actor or actor in set(shared)


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
        agent_settings=parse_settings(kind, json.loads(row["agent_settings_json"] or "null")),
    )


def current(conn: Connection, kind: LayerKind, owner: str, layer_id: str) -> StoredDefaults | None:
    row = (
        conn.execute(
            select(ld)
            .where(ld.c.kind == kind.value, ld.c.owner == owner, ld.c.layer_id == layer_id)
            .order_by(ld.c.version.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return None if row is None else _stored(row)


def shared_with(conn: Connection, kind: LayerKind, owner: str, layer_id: str) -> list[str]:
    query = select(shares.c.user_id).where(
        shares.c.kind == kind.value, shares.c.owner == owner, shares.c.layer_id == layer_id
    )
    return sorted(conn.execute(query).scalars())


def readable(
    conn: Connection,
    kind: LayerKind,
    owner: str,
    layer_id: str,
    *,
    actor: str,
    admin: bool,
    version: int | None = None,
) -> StoredDefaults | None:
    """The layer (its current version, or `version`) if `actor` may read it; None if it
    does not exist or is not theirs to read (the two look the same)."""
    who = shared_with(conn, kind, owner, layer_id) if kind in SCOPED else []
    if not may_read(kind, layer_id, owner, actor, admin=admin, shared=who):
        return None
    if version is None:
        return current(conn, kind, owner, layer_id)
    row = (
        conn.execute(
            select(ld).where(
                ld.c.kind == kind.value,
                ld.c.owner == owner,
                ld.c.layer_id == layer_id,
                ld.c.version == version,
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else _stored(row)


def get_defaults(
    engine: Engine,
    kind: LayerKind,
    owner: str,
    layer_id: str,
    *,
    actor: str,
    admin: bool,
    version: int | None = None,
) -> StoredDefaults | None:
    with engine.connect() as conn:
        return readable(conn, kind, owner, layer_id, actor=actor, admin=admin, version=version)


def get_shares(engine: Engine, kind: LayerKind, owner: str, layer_id: str) -> list[str]:
    with engine.connect() as conn:
        return shared_with(conn, kind, owner, layer_id)


def set_shares(
    engine: Engine,
    kind: LayerKind,
    owner: str,
    layer_id: str,
    users: Iterable[str],
    *,
    actor: str,
    now: float,
) -> list[str]:
    """Replace who else may read and use the layer (an admin's call): 404 if it is not
    stored, 422 for a kind that is not shared."""
    if kind not in SCOPED:
        raise LayerError(
            422, f"only projects, agent profiles and triggers are shared, not {kind.value}"
        )
    check_layer_id(kind, layer_id)
    wanted = sorted(set(users) - {owner})
    with engine.begin() as conn:
        if current(conn, kind, owner, layer_id) is None:
            raise LayerError(404, f"no stored defaults for {kind.value} {owner}/{layer_id}")
        where = (
            shares.c.kind == kind.value,
            shares.c.owner == owner,
            shares.c.layer_id == layer_id,
        )
        conn.execute(delete(shares).where(*where))
        for user in wanted:
            conn.execute(
                insert(shares).values(
                    kind=kind.value,
                    owner=owner,
                    layer_id=layer_id,
                    user_id=user,
                    granted_by=actor,
                    granted_at=now,
                )
            )
    return wanted


def put_defaults(
    engine: Engine,
    kind: LayerKind,
    layer_id: str,
    raw: Mapping[str, Any] | None,
    *,
    settings_raw: Mapping[str, Any] | None = None,
    owner: str | None = None,
    actor: str,
    admin: bool,
    now: float,
    expected_version: int | None = None,
) -> StoredDefaults:
    """Store a new version of a layer's defaults under `owner`'s name (the actor's own
    when None), with its agent settings. RequirementsError and SettingsError name a bad
    field; LayerError carries the HTTP status: 403 not yours, 409 not at
    `expected_version`."""
    check_layer_id(kind, layer_id)
    if why := change_refusal(kind, layer_id, owner, actor, admin):
        raise LayerError(403, why)
    scope = namespace(kind, layer_id, owner, actor)
    requirements = parse_requirements(kind, raw)  # after the permission check
    settings = parse_settings(kind, settings_raw)
    # Which agent the layer's tasks run is not known here: every built-in agent's
    # credential names are refused (a task checks its own agent's again).
    check_env(kind, settings, (c for a in builtin_agents().values() for c in a.credential_names))
    if kind is LayerKind.PLATFORM and (missing := requirements.missing()):
        raise LayerError(422, f"the platform defaults must define every field; missing {missing}")
    for _ in range(_MAX_ATTEMPTS):
        with engine.connect() as conn:
            _check_secrets(conn, kind, scope, settings)
            now_stored = current(conn, kind, scope, layer_id)
        version = 1 if now_stored is None else now_stored.version + 1
        if expected_version is not None and expected_version != version - 1:
            raise LayerError(
                409,
                f"{kind.value} {layer_id!r} is at version {version - 1}, not {expected_version}",
            )
        made = StoredDefaults(kind, layer_id, version, requirements, scope, actor, now, settings)
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(ld).values(
                        kind=kind.value,
                        layer_id=layer_id,
                        version=version,
                        requirements_json=json.dumps(requirements.to_json_dict()),
                        agent_settings_json=None
                        if settings.empty()
                        else json.dumps(settings.to_json_dict()),
                        owner=scope,
                        updated_by=actor,
                        updated_at=now,
                    )
                )
            return made
        except IntegrityError:
            continue  # a concurrent change took this version: look again
    raise LayerError(409, f"{kind.value} {layer_id!r} is changing too often; try again")


def _check_secrets(conn: Connection, kind: LayerKind, scope: str, settings: AgentSettings) -> None:
    """A layer names its owner's secrets (each task using it: its own owner's, checked at
    submission); the platform's has no owner, so it names none."""
    for where, name in settings.secret_refs():
        if kind is LayerKind.PLATFORM:
            raise SettingsError(kind, where, "the platform's layer cannot name a user's secret")
        if missing(conn, scope, [name]):
            raise SettingsError(kind, where, f"no secret {name!r} of {scope}'s")
