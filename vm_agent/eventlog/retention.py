"""Which oldest events of a session to drop to fit its byte budget (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Trim:
    """Drop every event with seq <= `through_seq`: `count` events, `freed` bytes."""

    through_seq: int
    count: int
    freed: int


def plan_trim(
    oldest_first: Iterable[tuple[int, int, int]],
    total_bytes: int,
    limit_bytes: int,
    head_seq: int,
    protected_after_rowid: int | None,
) -> Trim | None:
    """Plan the drop of the oldest events until the session fits `limit_bytes`.

    `oldest_first` yields `(rowid, seq, size)` in seq order and is consumed
    lazily. The newest event (`head_seq`) is always kept, so a session's head
    stays readable even when one event is larger than the budget. Events past
    `protected_after_rowid` (the slowest outbox delivery cursor) are never
    dropped: undelivered events outlive the budget until delivered.
    """
    if total_bytes <= limit_bytes:
        return None
    freed = 0
    count = 0
    through = 0
    for rowid, seq, size in oldest_first:
        if total_bytes - freed <= limit_bytes or seq >= head_seq:
            break
        if protected_after_rowid is not None and rowid > protected_after_rowid:
            break
        freed += size
        count += 1
        through = seq
    if count == 0:
        return None
    return Trim(through_seq=through, count=count, freed=freed)
