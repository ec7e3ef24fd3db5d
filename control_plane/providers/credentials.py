"""Provider credentials per user (bring your own cloud): sealed at rest, opened only to call
the provider, never in an answer, a log line, the user-data or anything a node gets."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update

from control_plane.identity.sealing import Sealer
from control_plane.storage.db import provider_credentials as table

USER = "user"


def _where(kind: str, owner: str, provider: str) -> str:
    # the sealed value is bound to its row: copied elsewhere, it does not open
    return f"provider-credential:{kind}:{owner}:{provider}"


def store(
    engine: Engine, sealer: Sealer, owner: str, provider: str, secret: str, *, now: float
) -> None:
    sealed = sealer.seal_text(secret, _where(USER, owner, provider))
    key = (
        (table.c.owner_kind == USER) & (table.c.owner_id == owner) & (table.c.provider == provider)
    )
    with engine.begin() as conn:
        changed = conn.execute(update(table).where(key).values(sealed=sealed, updated_at=now))
        if changed.rowcount == 0:
            conn.execute(
                insert(table).values(
                    owner_kind=USER,
                    owner_id=owner,
                    provider=provider,
                    sealed=sealed,
                    updated_at=now,
                )
            )


def updated_at(engine: Engine, owner: str, provider: str) -> float | None:
    """When the user's credential for ``provider`` was set, or None: all an answer may say."""
    with engine.connect() as conn:
        found = conn.execute(
            select(table.c.updated_at).where(
                (table.c.owner_kind == USER)
                & (table.c.owner_id == owner)
                & (table.c.provider == provider)
            )
        ).scalar_one_or_none()
    return None if found is None else float(found)


def remove(engine: Engine, owner: str, provider: str) -> bool:
    with engine.begin() as conn:
        gone = conn.execute(
            delete(table).where(
                (table.c.owner_kind == USER)
                & (table.c.owner_id == owner)
                & (table.c.provider == provider)
            )
        )
    return gone.rowcount > 0


def credential_for(engine: Engine, sealer: Sealer, owner: str, provider: str) -> str | None:
    """The user's credential, opened, for the one call that needs it; None if none is set."""
    with engine.connect() as conn:
        sealed = conn.execute(
            select(table.c.sealed).where(
                (table.c.owner_kind == USER)
                & (table.c.owner_id == owner)
                & (table.c.provider == provider)
            )
        ).scalar_one_or_none()
    if sealed is None:
        return None
    return sealer.open_text(str(sealed), _where(USER, owner, provider))
