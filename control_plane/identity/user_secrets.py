"""A user's secrets (issue 25): values an MCP server of theirs needs (a token in a header,
an API key in its environment), named by the user, sealed at rest and bound to owner and
name. Agent settings name them (`{"name": "X", "secret": "<name>"}`); only a node running a
session of that user's task that names them gets the values (api/callbacks.py). Listing
answers names and times only. Storage is synchronous SQLAlchemy Core.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from control_plane.identity.sealing import Sealer
from control_plane.storage.db import user_secrets as table
from control_plane.storage.secret_names import missing

__all__ = ["MAX_VALUE_BYTES", "NAME", "listing", "missing", "open_values", "put", "remove"]

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_VALUE_BYTES = 8192
# Far above any real need, low enough that one user cannot fill the database.
MAX_PER_OWNER = 256


class SecretLimitError(Exception):
    pass


class MissingSecretError(Exception):
    """A referenced secret the owner does not have (deleted since it was referenced)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no secret {name!r}: it was deleted after the task referenced it")
        self.name = name


def _where(owner: str, name: str) -> str:
    # Bound to its row: a sealed value copied to another owner or name does not open.
    return f"user-secret:{owner}:{name}"


def _key(owner: str, name: str) -> Any:
    return (table.c.owner == owner) & (table.c.name == name)


def put(engine: Engine, sealer: Sealer, owner: str, name: str, value: str, *, now: float) -> bool:
    """Store (or replace) `owner`'s secret `name`; True when it is new."""
    sealed = sealer.seal_text(value, _where(owner, name))
    with engine.begin() as conn:
        changed = conn.execute(
            update(table).where(_key(owner, name)).values(sealed=sealed, updated_at=now)
        )
        if changed.rowcount:
            return False
        count = len(conn.execute(select(table.c.name).where(table.c.owner == owner)).all())
        if count >= MAX_PER_OWNER:
            raise SecretLimitError(f"at most {MAX_PER_OWNER} secrets per user")
        conn.execute(
            insert(table).values(
                owner=owner, name=name, sealed=sealed, created_at=now, updated_at=now
            )
        )
    return True


def listing(engine: Engine, owner: str) -> list[dict[str, Any]]:
    """Names and times, never a value."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.name, table.c.created_at, table.c.updated_at)
            .where(table.c.owner == owner)
            .order_by(table.c.name)
        ).all()
    return [{"name": r.name, "createdAt": r.created_at, "updatedAt": r.updated_at} for r in rows]


def remove(engine: Engine, owner: str, name: str) -> bool:
    with engine.begin() as conn:
        return conn.execute(delete(table).where(_key(owner, name))).rowcount > 0


def open_values(engine: Engine, sealer: Sealer, owner: str, names: Iterable[str]) -> dict[str, str]:
    """`owner`'s secrets `names`, opened, for the one answer that carries them
    (MissingSecretError for one that is gone)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(table.c.name, table.c.sealed).where(
                table.c.owner == owner, table.c.name.in_(wanted)
            )
        ).all()
    sealed = {r.name: str(r.sealed) for r in rows}
    for name in wanted:
        if name not in sealed:
            raise MissingSecretError(name)
    return {n: sealer.open_text(sealed[n], _where(owner, n)) for n in wanted}
