"""Provider capacity maps and picking the smallest size that fits a reservation."""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.demand.reservations import ResolvedResourceReservation


@dataclass(frozen=True)
class SizeCapacity:
    vcpu: int
    memory_gb: int
    disk_gb: int

    @property
    def cpu_millis(self) -> int:
        return self.vcpu * 1000

    @property
    def memory_mb(self) -> int:
        return self.memory_gb * 1024

    @property
    def disk_mb(self) -> int:
        return self.disk_gb * 1024


SIZE_ORDER: tuple[str, ...] = ("small", "medium", "large")


def _sizes(*caps: tuple[int, int, int]) -> dict[str, SizeCapacity]:
    return {name: SizeCapacity(*cap) for name, cap in zip(SIZE_ORDER, caps, strict=True)}


PROVIDER_CAPACITY: dict[str, dict[str, SizeCapacity]] = {
    "hetzner": _sizes((2, 4, 40), (4, 8, 80), (8, 16, 160)),
    "scaleway": _sizes((3, 4, 40), (4, 12, 120), (8, 32, 600)),
    "gcp": _sizes((1, 4, 50), (2, 8, 50), (4, 16, 50)),
    "vultr": _sizes((2, 4, 80), (4, 8, 160), (6, 16, 320)),
    "digitalocean": _sizes((2, 4, 80), (4, 8, 160), (8, 16, 320)),
    "upcloud": _sizes((2, 4, 50), (4, 8, 80), (8, 16, 160)),
    # the control plane's own machine (the qemu driver): what each VM is given
    "qemu": _sizes((2, 4, 20), (4, 8, 40), (8, 16, 80)),
}


class UnknownProviderError(ValueError):
    def __init__(self, provider: str) -> None:
        known = ", ".join(sorted(PROVIDER_CAPACITY))
        super().__init__(f"unknown provider {provider!r} (known: {known})")
        self.provider = provider


class NoSizeFitsError(ValueError):
    """No size of the provider holds the reservation; we never fall back to the largest."""

    def __init__(self, provider: str, shortfalls: dict[str, list[str]]) -> None:
        largest = SIZE_ORDER[-1]
        why = "; ".join(shortfalls[largest])
        super().__init__(f"no {provider} size fits the reservation (largest, {largest}: {why})")
        self.provider = provider
        self.shortfalls = shortfalls


def shortfalls(cap: SizeCapacity, res: ResolvedResourceReservation) -> list[str]:
    """What a size lacks for a reservation; empty when it fits."""
    out: list[str] = []
    if cap.cpu_millis < res.cpu_millis:
        out.append(f"cpu {cap.cpu_millis}m < {res.cpu_millis}m")
    if cap.memory_mb < res.memory_mb:
        out.append(f"memory {cap.memory_mb} MB < {res.memory_mb} MB")
    if cap.disk_mb < res.disk_mb:
        out.append(f"disk {cap.disk_mb} MB < {res.disk_mb} MB")
    return out


def pick_size(provider: str, res: ResolvedResourceReservation) -> str:
    """The smallest size of `provider` that fits `res`; raises NoSizeFitsError if none does."""
    sizes = PROVIDER_CAPACITY.get(provider)
    if sizes is None:
        raise UnknownProviderError(provider)
    missing: dict[str, list[str]] = {}
    for name in SIZE_ORDER:
        lacks = shortfalls(sizes[name], res)
        if not lacks:
            return name
        missing[name] = lacks
    raise NoSizeFitsError(provider, missing)
