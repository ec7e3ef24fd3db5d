"""Which connections the viewer port takes: caps on all, per source address, and not yet
authenticated ones (pure: no sockets, no clock).

The gate asks ``admit`` for every accepted socket before any TLS or HTTP work is spent on
it; a refused one is closed at once. A connection counts as unauthenticated from its accept
until its token is verified (header or first message), so a flood of strangers is held to
``unauthenticated`` sockets, however fast it reconnects, and one source address to
``unauthenticated_per_address`` of them, so that it cannot take the whole pool alone.

When the unauthenticated pool is full, a newcomer (within its own address's caps) is let in
and the connection that has waited longest without authenticating is evicted: a real viewer
authenticates within a round trip or two, a slow-loris stranger holds its socket for the
whole handshake timeout, so the oldest is almost always a stranger's, and a flood from many
addresses cannot shut real viewers out of new handshakes.

Each address group may also open only so many new connections a second (a token bucket
whose burst is its unauthenticated cap): a stranger that redials as fast as it is dropped is
refused at accept instead of churning the pool.

Addresses are grouped as an operator would block them: an IPv4 address alone, an IPv6
address by its /64 (one host usually has a whole /64), an IPv4-mapped IPv6 address as the
IPv4 address it maps.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum


class Refusal(Enum):
    RATE = "rate"
    TOTAL = "total"
    ADDRESS = "address"
    ADDRESS_UNAUTHENTICATED = "address_unauthenticated"


@dataclass(frozen=True, slots=True)
class Limits:
    total: int
    per_address: int
    unauthenticated: int
    unauthenticated_per_address: int
    # New connections an address group may open per second, after a burst of
    # ``unauthenticated_per_address`` (a token bucket).
    new_per_address_per_s: float = float("inf")

    def __post_init__(self) -> None:
        if min(self.total, self.per_address, self.unauthenticated) < 1:
            raise ValueError("connection limits must be at least 1")
        if self.unauthenticated_per_address < 1:
            raise ValueError("connection limits must be at least 1")
        if not self.new_per_address_per_s > 0:
            raise ValueError("the rate of new connections must be positive")


class RateBuckets:
    """A token bucket per address group: ``burst`` at once, then ``rate`` a second."""

    PRUNE_ABOVE = 4096  # groups remembered before full buckets are forgotten

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._levels: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float) -> bool:
        level, at = self._levels.get(key, (self.burst, now))
        level = self._refilled(level, at, now)
        if level < 1.0:
            self._levels[key] = (level, now)
            return False
        self._levels[key] = (level - 1.0, now)
        if len(self._levels) > self.PRUNE_ABOVE:
            self._prune(now)
        return True

    def _refilled(self, level: float, at: float, now: float) -> float:
        # A clock set back refills nothing (and never drains).
        return min(self.burst, level + max(0.0, now - at) * self.rate)

    def _prune(self, now: float) -> None:
        full = [
            k for k, (lv, at) in self._levels.items() if self._refilled(lv, at, now) >= self.burst
        ]
        for key in full:
            del self._levels[key]

    def __len__(self) -> int:
        return len(self._levels)


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


@dataclass(frozen=True, slots=True, eq=False)
class Admitted:
    ticket: Ticket
    evicted: Ticket | None = None  # released already: the caller closes its connection


class Admission:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.unauthenticated = 0
        self._per_address: dict[str, int] = {}
        self._unauth_per_address: dict[str, int] = {}
        self._waiting: dict[Ticket, None] = {}  # unauthenticated, oldest first
        self._rates = RateBuckets(limits.new_per_address_per_s, limits.unauthenticated_per_address)

    def admit(self, host: str, now: float) -> Admitted | Refusal:
        """``now``: monotonic seconds, for the rate of new connections."""
        key = address_key(host)
        lim = self.limits
        if not self._rates.take(key, now):
            return Refusal.RATE
        if self.total >= lim.total:
            return Refusal.TOTAL
        if self._per_address.get(key, 0) >= lim.per_address:
            return Refusal.ADDRESS
        if self._unauth_per_address.get(key, 0) >= lim.unauthenticated_per_address:
            return Refusal.ADDRESS_UNAUTHENTICATED
        evicted = None
        if self.unauthenticated >= lim.unauthenticated:
            evicted = next(iter(self._waiting))
            self.release(evicted)
        ticket = Ticket(key)
        self.total += 1
        self.unauthenticated += 1
        _add(self._per_address, key, 1)
        _add(self._unauth_per_address, key, 1)
        self._waiting[ticket] = None
        return Admitted(ticket, evicted)

    def authenticated(self, ticket: Ticket) -> None:
        """The connection's token was verified: it leaves the unauthenticated pool."""
        if ticket.released or ticket.authenticated:
            return
        ticket.authenticated = True
        self._leave_pool(ticket)

    def release(self, ticket: Ticket) -> None:
        """The connection is closed (idempotent)."""
        if ticket.released:
            return
        ticket.released = True
        self.total -= 1
        _add(self._per_address, ticket.key, -1)
        if not ticket.authenticated:
            self._leave_pool(ticket)

    def _leave_pool(self, ticket: Ticket) -> None:
        self.unauthenticated -= 1
        _add(self._unauth_per_address, ticket.key, -1)
        del self._waiting[ticket]

    def addresses(self) -> int:
        return len(self._per_address)


def _add(counts: dict[str, int], key: str, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)
