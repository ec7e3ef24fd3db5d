"""The connection caps, as tables: admit, authenticate, release (pure)."""

from __future__ import annotations

import pytest

from vm_agent.server.admission import (
    Admission,
    Admitted,
    Limits,
    RateBuckets,
    Refusal,
    Ticket,
    address_key,
)


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("not-an-address", "not-an-address"),
        ("", ""),
    ],
)
def test_address_groups(host: str, key: str) -> None:
    assert address_key(host) == key


LIMITS = Limits(total=6, per_address=4, unauthenticated=5, unauthenticated_per_address=2)

# Each step: (action, host or ticket index, expected). "admit" expects the index of the new
# ticket (the n-th admitted, from 0), or a Refusal, or (index, evicted index) when the full
# unauthenticated pool makes room; "auth"/"release" act on a ticket index.
CASES: dict[str, list[tuple[str, object, object]]] = {
    "one address: the per-address unauthenticated cap refuses": [
        ("admit", "a", 0),
        ("admit", "a", 1),
        ("admit", "a", Refusal.ADDRESS_UNAUTHENTICATED),
        ("admit", "b", 2),
    ],
    "authenticating frees the unauthenticated slot, not the address's": [
        ("admit", "a", 0),
        ("admit", "a", 1),
        ("auth", 0, None),
        ("auth", 1, None),
        ("admit", "a", 2),
        ("admit", "a", 3),
        ("admit", "a", Refusal.ADDRESS),
    ],
    "a full unauthenticated pool evicts its oldest for a newcomer": [
        ("admit", "a", 0),
        ("admit", "a", 1),
        ("admit", "b", 2),
        ("admit", "b", 3),
        ("admit", "c", 4),
        ("admit", "d", (5, 0)),
        ("admit", "e", (6, 1)),
        ("auth", 2, None),  # out of the pool: room without evicting
        ("admit", "f", 7),
        ("admit", "g", Refusal.TOTAL),  # the total cap refuses; it evicts nobody
        ("release", 2, None),
        ("admit", "g", (8, 3)),  # the pool is full again (3..7): its oldest goes
    ],
    "the oldest is by arrival, whatever its address": [
        ("admit", "c", 0),
        ("admit", "a", 1),
        ("admit", "a", 2),
        ("admit", "b", 3),
        ("admit", "b", 4),
        ("release", 1, None),
        ("admit", "d", 5),
        ("admit", "d", (6, 0)),
    ],
    "the per-address cap still refuses when the pool is full": [
        ("admit", "a", 0),
        ("admit", "a", 1),
        ("admit", "b", 2),
        ("admit", "b", 3),
        ("admit", "c", 4),
        ("admit", "a", Refusal.ADDRESS_UNAUTHENTICATED),
    ],
    "the total cap, with everyone authenticated": [
        *[("admit-auth", i, None) for i in range(6)],
        ("admit", "z", Refusal.TOTAL),
        ("release", 0, None),
        ("admit", "z", 6),
    ],
    "release is idempotent and gives back what the ticket held": [
        ("admit", "a", 0),
        ("release", 0, None),
        ("release", 0, None),
        ("auth", 0, None),  # after release: nothing happens
        ("admit", "a", 1),
        ("admit", "a", 2),
        ("admit", "a", Refusal.ADDRESS_UNAUTHENTICATED),
    ],
}


@pytest.mark.parametrize("steps", list(CASES.values()), ids=list(CASES))
def test_admission_table(steps: list[tuple[str, object, object]]) -> None:
    adm = Admission(LIMITS)
    tickets: list[Ticket] = []
    for action, arg, expected in steps:
        if action == "admit-auth":  # a distinct address each, authenticated at once
            got = adm.admit(f"10.0.0.{arg}", 0.0)
            assert isinstance(got, Admitted) and got.evicted is None
            adm.authenticated(got.ticket)
            tickets.append(got.ticket)
        elif action == "admit":
            got = adm.admit(str(arg), 0.0)
            if isinstance(expected, Refusal):
                assert got is expected
                continue
            assert isinstance(got, Admitted)
            index, victim = expected if isinstance(expected, tuple) else (expected, None)
            assert len(tickets) == index
            tickets.append(got.ticket)
            if victim is None:
                assert got.evicted is None
            else:
                assert got.evicted is tickets[victim]
                assert got.evicted.released
        elif action == "auth":
            adm.authenticated(tickets[int(str(arg))])
        elif action == "release":
            adm.release(tickets[int(str(arg))])
        _check_counts(adm, tickets)
    assert adm.unauthenticated <= LIMITS.unauthenticated
    assert adm.total <= LIMITS.total


def _check_counts(adm: Admission, tickets: list[Ticket]) -> None:
    live = [t for t in tickets if not t.released]
    assert adm.total == len(live)
    assert adm.unauthenticated == sum(1 for t in live if not t.authenticated)
    assert adm.addresses() == len({t.key for t in live})


def test_everything_released_leaves_nothing() -> None:
    adm = Admission(LIMITS)
    admitted = [adm.admit(h, 0.0) for h in "abcab"]
    tickets = [a.ticket for a in admitted if isinstance(a, Admitted)]
    assert len(tickets) == 5
    adm.authenticated(tickets[0])
    for ticket in tickets:
        adm.release(ticket)
    assert (adm.total, adm.unauthenticated, adm.addresses()) == (0, 0, 0)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Limits(total=0, per_address=1, unauthenticated=1, unauthenticated_per_address=1)
    with pytest.raises(ValueError):
        Limits(total=1, per_address=1, unauthenticated=1, unauthenticated_per_address=0)
    with pytest.raises(ValueError):
        Limits(1, 1, 1, 1, new_per_address_per_s=0.0)


@pytest.mark.parametrize(
    ("takes", "expected"),
    [
        # (key, now) -> allowed; rate 2/s, burst 3
        ([("a", 0.0)] * 3, [True] * 3),
        ([("a", 0.0)] * 4, [True, True, True, False]),
        ([("a", 0.0)] * 4 + [("b", 0.0)], [True, True, True, False, True]),
        ([("a", 0.0)] * 3 + [("a", 0.4), ("a", 0.5)], [True, True, True, False, True]),
        ([("a", 0.0)] * 3 + [("a", 100.0)] * 4, [True, True, True, True, True, True, False]),
        # A clock set back refills nothing, and does not lock the address out either.
        ([("a", 10.0)] * 3 + [("a", 5.0), ("a", 10.5)], [True, True, True, False, True]),
    ],
)
def test_rate_buckets(takes: list[tuple[str, float]], expected: list[bool]) -> None:
    buckets = RateBuckets(rate=2.0, burst=3)
    assert [buckets.take(key, now) for key, now in takes] == expected


def test_full_buckets_are_forgotten_past_the_bound() -> None:
    buckets = RateBuckets(rate=1.0, burst=2)
    for i in range(RateBuckets.PRUNE_ABOVE):
        buckets.take(f"10.{i // 256}.{i % 256}.1", 0.0)
    assert len(buckets) == RateBuckets.PRUNE_ABOVE
    buckets.take("busy", 100.0)  # everyone else has refilled by now: forgotten
    assert len(buckets) <= 1


def test_the_rate_refuses_before_anything_is_counted() -> None:
    limits = Limits(
        total=100, per_address=100, unauthenticated=100, unauthenticated_per_address=3,
        new_per_address_per_s=1.0,
    )  # fmt: skip
    adm = Admission(limits)
    got = [adm.admit("a", 0.0) for _ in range(4)]
    assert [isinstance(g, Admitted) for g in got] == [True, True, True, False]
    assert got[3] is Refusal.RATE
    assert (adm.total, adm.unauthenticated) == (3, 3)
    for g in got[:3]:
        assert isinstance(g, Admitted)
        adm.authenticated(g.ticket)
    assert adm.admit("a", 0.5) is Refusal.RATE
    assert isinstance(adm.admit("a", 1.0), Admitted)
