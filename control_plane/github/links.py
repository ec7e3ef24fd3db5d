"""GitHub App installation links: several users of one organisation may link one installation.

The storage key (`installation_id`, what other rows reference) and the GitHub id
(`external_installation_id`) are separate. A user's link stores "{user_id}:{github_id}"
as its key; legacy rows hold the GitHub id as their key and may lack the external id.
Every GitHub API call and every API response uses `github_id()`.

A link is *proven* when GitHub said the user may access the installation (their user
token from the App's OAuth flow, `proof="github-user"`) or an admin confirmed it
(`proof="admin"`). Only a proven link opens repositories (`control_plane.github.access`);
rows from before proofs existed stay unproven until linked again with a proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from control_plane.storage.db import github_installations as gi


class AlreadyLinkedError(ValueError):
    pass


PROOF_KINDS = ("github-user", "admin")


@dataclass(frozen=True)
class Proof:
    """How a link was proven: `kind` (PROOF_KINDS), `by` (the GitHub login, or the admin's
    user id), `at` (the time)."""

    kind: str
    by: str
    at: float

    def __post_init__(self) -> None:
        if self.kind not in PROOF_KINDS:
            raise ValueError(f"unknown proof {self.kind!r}")


@dataclass(frozen=True)
class InstallationLink:
    storage_id: str
    external_installation_id: str | None
    user_id: str
    account_login: str | None
    proof: Proof | None = None

    @property
    def proven(self) -> bool:
        return self.proof is not None

    @property
    def github_id(self) -> str:
        """The id GitHub knows: the external id if set, else the stored one (legacy rows)."""
        return self.external_installation_id or self.storage_id

    def to_api(self) -> dict[str, Any]:
        return {
            "installationId": self.github_id,
            "accountLogin": self.account_login,
            "proven": self.proven,
            "proof": self.proof.kind if self.proof else None,
        }


def storage_key(user_id: str, github_id: str) -> str:
    return f"{user_id}:{github_id}"


def _link(row: Any) -> InstallationLink:
    proof = None
    if row["proof"] in PROOF_KINDS and row["proven_at"] is not None:
        proof = Proof(row["proof"], row["proven_by"] or "", row["proven_at"])
    return InstallationLink(
        storage_id=row["installation_id"],
        external_installation_id=row["external_installation_id"],
        user_id=row["user_id"],
        account_login=row["account_login"],
        proof=proof,
    )


def _matches_github_id(github_id: str) -> Any:
    # Legacy rows without an external id are matched by their stored key.
    return or_(
        gi.c.external_installation_id == github_id,
        (gi.c.external_installation_id.is_(None)) & (gi.c.installation_id == github_id),
    )


def link_installation(
    engine: Engine,
    user_id: str,
    github_id: str,
    account_login: str | None = None,
    proof: Proof | None = None,
) -> InstallationLink:
    """Link `github_id` for `user_id` with `proof`. An unproven link of theirs (an older
    row) becomes proven; AlreadyLinkedError if they have a proven one already (or an
    unproven one and no proof is given)."""
    if not github_id or ":" in github_id:
        raise ValueError(f"bad GitHub installation id {github_id!r}")
    proof_columns = (
        {"proof": proof.kind, "proven_by": proof.by, "proven_at": proof.at} if proof else {}
    )
    with engine.begin() as conn:
        existing = (
            conn.execute(select(gi).where(gi.c.user_id == user_id, _matches_github_id(github_id)))
            .mappings()
            .first()
        )
        if existing is not None:
            if _link(existing).proven or proof is None:
                raise AlreadyLinkedError(
                    f"user {user_id!r} already linked installation {github_id}"
                )
            # Proving an older link: only if it is still unproven (a concurrent proof wins).
            done = conn.execute(
                update(gi)
                .where(gi.c.id == existing["id"], gi.c.proven_at.is_(None))
                .values(
                    external_installation_id=github_id,
                    account_login=account_login or existing["account_login"],
                    **proof_columns,
                )
            )
            if done.rowcount != 1:
                raise AlreadyLinkedError(
                    f"user {user_id!r} already linked installation {github_id}"
                )
            return InstallationLink(
                existing["installation_id"],
                github_id,
                user_id,
                account_login or existing["account_login"],
                proof,
            )
    row = {
        "installation_id": storage_key(user_id, github_id),
        "external_installation_id": github_id,
        "user_id": user_id,
        "account_login": account_login,
        **proof_columns,
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(gi).values(**row))
    except IntegrityError as exc:  # a concurrent link by the same user
        raise AlreadyLinkedError(
            f"user {user_id!r} already linked installation {github_id}"
        ) from exc
    return InstallationLink(
        storage_key(user_id, github_id), github_id, user_id, account_login, proof
    )


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
