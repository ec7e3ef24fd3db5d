"""Which of a user's secrets exist (issue 25): what checking a reference needs, without
opening anything (the sealed values are identity/user_secrets.py's)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select

from control_plane.storage.db import user_secrets as table


def missing(conn: Connection, owner: str, names: Iterable[str]) -> list[str]:
    """Which of `names` `owner` has no secret of, sorted."""
    wanted = set(names)
    if not wanted:
        return []
    found = conn.execute(
        select(table.c.name).where(table.c.owner == owner, table.c.name.in_(sorted(wanted)))
    ).scalars()
    return sorted(wanted - set(found))
