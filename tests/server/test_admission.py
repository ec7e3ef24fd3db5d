"""The connection caps, as tables: admit, authenticate, release (pure)."""

from __future__ import annotations

import pytest

from vm_agent.server.admission import Admission, Limits, Refusal, Ticket, address_key


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

# Each step: (action, host or ticket index, expected). Actions: "admit" -> a ticket index
# (the n-th admitted, from 0) or the Refusal; "auth"/"release" act on a ticket index.
CASES = {
    "one address: the per-address unauthenticated cap first": [
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
    "the unauthenticated pool across addresses": [
        ("admit", "a", 0),
        ("admit", "a", 1),
        ("admit", "b", 2),
        ("admit", "b", 3),
        ("admit", "c", 4),
        ("admit", "d", Refusal.UNAUTHENTICATED),
        ("auth", 4, None),
        ("admit", "d", 5),
    ],
    "the total cap, with everyone authenticated": [
        *[(step, i, None) for i in range(6) for step in ("admit-auth",)],
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
            got = adm.admit(f"10.0.0.{arg}")
            assert isinstance(got, Ticket)
            adm.authenticated(got)
            tickets.append(got)
        elif action == "admit":
            got = adm.admit(str(arg))
            if isinstance(expected, Refusal):
                assert got is expected
            else:
                assert isinstance(got, Ticket)
                assert len(tickets) == expected
                tickets.append(got)
        elif action == "auth":
            adm.authenticated(tickets[int(str(arg))])
        elif action == "release":
            adm.release(tickets[int(str(arg))])
        _check_counts(adm, tickets)


def _check_counts(adm: Admission, tickets: list[Ticket]) -> None:
    live = [t for t in tickets if not t.released]
    assert adm.total == len(live)
    assert adm.unauthenticated == sum(1 for t in live if not t.authenticated)
    assert adm.addresses() == len({t.key for t in live})


def test_everything_released_leaves_nothing() -> None:
    adm = Admission(LIMITS)
    tickets = [t for h in "abcab" if isinstance(t := adm.admit(h), Ticket)]
    adm.authenticated(tickets[0])
    for t in tickets:
        adm.release(t)
    assert (adm.total, adm.unauthenticated, adm.addresses()) == (0, 0, 0)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Limits(total=0, per_address=1, unauthenticated=1, unauthenticated_per_address=1)
    with pytest.raises(ValueError):
        Limits(total=1, per_address=1, unauthenticated=1, unauthenticated_per_address=0)
