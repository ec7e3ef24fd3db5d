"""Which connections the viewer port takes: caps on all, per source address, and not yet
authenticated ones (pure: no sockets, no clock).

The gate asks ``admit`` for every accepted socket before any TLS or HTTP work is spent on
it; a refused one is closed at once. A connection counts as unauthenticated from its accept
until its token is verified (header or first message), so a flood of strangers is held to
``unauthenticated`` sockets, however fast it reconnects, and one source address to
``unauthenticated_per_address`` of them, so that it cannot take the whole pool alone.

Addresses are grouped as an operator would block them: an IPv4 address alone, an IPv6
address by its /64 (one host usually has a whole /64), an IPv4-mapped IPv6 address as the
IPv4 address it maps.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum


class Refusal(Enum):
    TOTAL = "total"
    ADDRESS = "address"
    UNAUTHENTICATED = "unauthenticated"
    ADDRESS_UNAUTHENTICATED = "address_unauthenticated"


@dataclass(frozen=True, slots=True)
class Limits:
    total: int
    per_address: int
    unauthenticated: int
    unauthenticated_per_address: int

    def __post_init__(self) -> None:
        if min(self.total, self.per_address, self.unauthenticated) < 1:
            raise ValueError("connection limits must be at least 1")
        if self.unauthenticated_per_address < 1:
            raise ValueError("connection limits must be at least 1")


def address_key(host: str) -> str:
    """The group a source address counts in (see the module doc)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Ticket:
    """One admitted connection, until ``Admission.release``."""

    __slots__ = ("authenticated", "key", "released")

    def __init__(self, key: str) -> None:
        self.key = key
        self.authenticated = False
        self.released = False


class Admission:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.unauthenticated = 0
        self._per_address: dict[str, int] = {}
        self._unauth_per_address: dict[str, int] = {}

    def admit(self, host: str) -> Ticket | Refusal:
        key = address_key(host)
        lim = self.limits
        if self.total >= lim.total:
            return Refusal.TOTAL
        if self._per_address.get(key, 0) >= lim.per_address:
            return Refusal.ADDRESS
        if self.unauthenticated >= lim.unauthenticated:
            return Refusal.UNAUTHENTICATED
        if self._unauth_per_address.get(key, 0) >= lim.unauthenticated_per_address:
            return Refusal.ADDRESS_UNAUTHENTICATED
        self.total += 1
        self.unauthenticated += 1
        _add(self._per_address, key, 1)
        _add(self._unauth_per_address, key, 1)
        return Ticket(key)

    def authenticated(self, ticket: Ticket) -> None:
        """The connection's token was verified: it leaves the unauthenticated pool."""
        if ticket.released or ticket.authenticated:
            return
        ticket.authenticated = True
        self.unauthenticated -= 1
        _add(self._unauth_per_address, ticket.key, -1)

    def release(self, ticket: Ticket) -> None:
        """The connection is closed (idempotent)."""
        if ticket.released:
            return
        ticket.released = True
        self.total -= 1
        _add(self._per_address, ticket.key, -1)
        if not ticket.authenticated:
            self.unauthenticated -= 1
            _add(self._unauth_per_address, ticket.key, -1)

    def addresses(self) -> int:
        return len(self._per_address)


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)
