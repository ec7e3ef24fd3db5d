"""The callback token ledger: every callback token minted, by `jti`, and its revocation.

A refresh records the new token and sets `revoked_at` of the one it replaces to the end
of a grace period, so requests already in flight with the old token still pass. Every
replica reads the same rows. Synchronous SQLAlchemy Core; callers run it in a thread.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from control_plane.storage.db import callback_tokens, control_plane_meta

LEDGER_SINCE = "callback_ledger_since"


@dataclass(frozen=True)
class LedgerEntry:
    jti: str
    node_id: str
    issued_at: float
    expires_at: float
    replaces: str | None = None
    revoked_at: float | None = None

    def revoked(self, now: float) -> bool:
        return self.revoked_at is not None and now >= self.revoked_at


def _row(entry: LedgerEntry) -> dict[str, object]:
    return {
        "jti": entry.jti,
        "node_id": entry.node_id,
        "issued_at": entry.issued_at,
        "expires_at": entry.expires_at,
        "replaces": entry.replaces,
        "revoked_at": entry.revoked_at,
    }


class CallbackLedger:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, entry: LedgerEntry) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(callback_tokens).values(**_row(entry)))

    def record_seen(self, entry: LedgerEntry) -> None:
        """Record a genuine token minted before the ledger began (a concurrent request may
        have recorded it first)."""
        with contextlib.suppress(IntegrityError):
            self.record(entry)

    def replace(self, old_jti: str, new: LedgerEntry, revoke_at: float, now: float) -> None:
        """Record `new`; the token `old_jti` is refused from `revoke_at` on (an earlier
        revocation, from an earlier refresh of the same token, stands). Rows of the node
        whose tokens have all expired are dropped here."""
        with self._engine.begin() as conn:
            conn.execute(insert(callback_tokens).values(**_row(new)))
            conn.execute(
                update(callback_tokens)
                .where(callback_tokens.c.jti == old_jti, callback_tokens.c.revoked_at.is_(None))
                .values(revoked_at=revoke_at)
            )
            conn.execute(
                delete(callback_tokens).where(
                    callback_tokens.c.node_id == new.node_id, callback_tokens.c.expires_at < now
                )
            )

    def get(self, jti: str) -> LedgerEntry | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(select(callback_tokens).where(callback_tokens.c.jti == jti))
                .mappings()
                .first()
            )
        return None if row is None else LedgerEntry(**dict(row))

    def since(self) -> float | None:
        """When keys of an older control plane (which kept no ledger) were imported; None
        if none ever were, and then every genuine callback token has a row."""
        with self._engine.connect() as conn:
            value = conn.execute(
                select(control_plane_meta.c.value).where(control_plane_meta.c.name == LEDGER_SINCE)
            ).scalar_one_or_none()
        return None if value is None else float(value)


def note_ledger_start(conn: Connection, now: float) -> None:
    """Keys that signed tokens without a ledger were imported now (the first time counts)."""
    found = conn.execute(
        select(control_plane_meta.c.name).where(control_plane_meta.c.name == LEDGER_SINCE)
    ).first()
    if found is None:
        conn.execute(insert(control_plane_meta).values(name=LEDGER_SINCE, value=repr(now)))
