"""Capacity selection: the smallest size of each provider that fits, or a clear refusal."""

from __future__ import annotations

import pytest

from control_plane.demand.capacity import NoSizeFitsError, UnknownProviderError, pick_size
from control_plane.demand.reservations import LayerKind, ResolvedResourceReservation


def res(vcpu: float, mem_gb: float, disk_gb: float) -> ResolvedResourceReservation:
    return ResolvedResourceReservation(
        cpu_millis=round(vcpu * 1000),
        memory_mb=round(mem_gb * 1024),
        disk_mb=round(disk_gb * 1024),
        exclusive_node=False,
        max_co_tenants=4,
        source=LayerKind.PLATFORM,
        source_id="platform",
        source_version=1,
    )


@pytest.mark.parametrize(
    ("provider", "need", "size"),
    [
        ("hetzner", (2, 4, 40), "small"),
        ("hetzner", (2, 4, 41), "medium"),
        ("hetzner", (8, 16, 160), "large"),
        ("scaleway", (3, 4, 40), "small"),
        ("scaleway", (4, 5, 40), "medium"),
        ("scaleway", (4, 12, 121), "large"),
        ("gcp", (1, 4, 50), "small"),
        ("gcp", (2, 4, 50), "medium"),
        ("gcp", (3, 4, 50), "large"),
        ("vultr", (2, 4, 80), "small"),
        ("vultr", (3, 4, 80), "medium"),
        ("vultr", (6, 16, 320), "large"),
        ("digitalocean", (2, 4, 80), "small"),
        ("digitalocean", (4, 8, 161), "large"),
        ("upcloud", (2, 4, 50), "small"),
        ("upcloud", (2, 4, 51), "medium"),
        ("upcloud", (8, 16, 160), "large"),
    ],
)
def test_smallest_fitting_size(provider: str, need: tuple[int, int, int], size: str) -> None:
    assert pick_size(provider, res(*need)) == size


@pytest.mark.parametrize(
    ("provider", "need", "lacking"),
    [
        ("hetzner", (9, 4, 40), "cpu"),
        ("gcp", (1, 4, 51), "disk"),
        ("scaleway", (8, 33, 40), "memory"),
        ("vultr", (7, 16, 320), "cpu"),
    ],
)
def test_none_fits_is_an_error_not_the_largest(
    provider: str, need: tuple[int, int, int], lacking: str
) -> None:
    with pytest.raises(NoSizeFitsError) as info:
        pick_size(provider, res(*need))
    assert provider in str(info.value)
    assert lacking in str(info.value)
    assert set(info.value.shortfalls) == {"small", "medium", "large"}


def test_unknown_provider() -> None:
    with pytest.raises(UnknownProviderError, match="aws"):
        pick_size("aws", res(1, 1, 1))
