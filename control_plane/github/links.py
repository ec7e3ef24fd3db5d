"""GitHub App installation links: several users of one organisation may link one installation.

The storage key (`installation_id`, what other rows reference) and the GitHub id
(`external_installation_id`) are separate. A user's link stores "{user_id}:{github_id}"
as its key; legacy rows hold the GitHub id as their key and may lack the external id.
Every GitHub API call and every API response uses `github_id()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, or_, select
from sqlalchemy.exc import IntegrityError

from control_plane.storage.db import github_installations as gi


class AlreadyLinkedError(ValueError):
    pass


@dataclass(frozen=True)
class InstallationLink:
    storage_id: str
    external_installation_id: str | None
    user_id: str
    account_login: str | None

    @property
    def github_id(self) -> str:
        """The id GitHub knows: the external id if set, else the stored one (legacy rows)."""
        return self.external_installation_id or self.storage_id

    def to_api(self) -> dict[str, Any]:
        return {"installationId": self.github_id, "accountLogin": self.account_login}


def storage_key(user_id: str, github_id: str) -> str:
    return f"{user_id}:{github_id}"


def _link(row: Any) -> InstallationLink:
    return InstallationLink(
        storage_id=row["installation_id"],
        external_installation_id=row["external_installation_id"],
        user_id=row["user_id"],
        account_login=row["account_login"],
    )


def _matches_github_id(github_id: str) -> Any:
    # Legacy rows without an external id are matched by their stored key.
    return or_(
        gi.c.external_installation_id == github_id,
        (gi.c.external_installation_id.is_(None)) & (gi.c.installation_id == github_id),
    )


def link_installation(
    engine: Engine, user_id: str, github_id: str, account_login: str | None = None
) -> InstallationLink:
    """Link `github_id` for `user_id`; AlreadyLinkedError if this user has it already."""
    if not github_id or ":" in github_id:
        raise ValueError(f"bad GitHub installation id {github_id!r}")
    with engine.connect() as conn:
        existing = conn.execute(
            select(gi.c.id).where(gi.c.user_id == user_id, _matches_github_id(github_id))
        ).first()
    if existing is not None:
        raise AlreadyLinkedError(f"user {user_id!r} already linked installation {github_id}")
    row = {
        "installation_id": storage_key(user_id, github_id),
        "external_installation_id": github_id,
        "user_id": user_id,
        "account_login": account_login,
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(gi).values(**row))
    except IntegrityError as exc:  # a concurrent link by the same user
        raise AlreadyLinkedError(
            f"user {user_id!r} already linked installation {github_id}"
        ) from exc
    return InstallationLink(storage_key(user_id, github_id), github_id, user_id, account_login)


def links_for_user(engine: Engine, user_id: str) -> list[InstallationLink]:
    with engine.connect() as conn:
        rows = conn.execute(select(gi).where(gi.c.user_id == user_id).order_by(gi.c.id)).mappings()
        return [_link(r) for r in rows]


def links_for_installation(engine: Engine, github_id: str) -> list[InstallationLink]:
    """Every user's link to one GitHub installation (legacy rows included)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(gi).where(_matches_github_id(github_id)).order_by(gi.c.id)
        ).mappings()
        return [_link(r) for r in rows]
