"""The Hetzner driver through the official hcloud library, against the API's stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import pytest

from control_plane.providers.base import (
    ProviderError,
    VmSpec,
    VmStatus,
    node_labels,
    plane_labels,
)
from control_plane.providers.hetzner import HetznerProvider
from tests.providers.hetzner_standin import StandIn, serving

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
TOKEN = "hz-" + "s3cr3t" * 8
T = TypeVar("T")


@pytest.fixture
async def api() -> AsyncIterator[tuple[StandIn, str]]:
    standin = StandIn(token=TOKEN)
    async with serving(standin) as endpoint:
        yield standin, endpoint


def provider(endpoint: str, standin: StandIn, **kw: Any) -> HetznerProvider:
    return HetznerProvider(TOKEN, endpoint=endpoint, clock=lambda: standin.now, **kw)


async def call(fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(fn, *args)


def spec(node: str = "n-1", size: str = "small") -> VmSpec:
    return VmSpec(
        name=f"vm-agent-{node}",
        size=size,
        region="fsn1",
        image="debian-12",
        user_data="#cloud-config\n{}\n",
        labels=node_labels("plane-a", node),
    )


async def test_create_list_get_delete(api: tuple[StandIn, str]) -> None:
    standin, endpoint = api
    hz = provider(endpoint, standin)
    vm = await call(hz.create, spec("n-1", "medium"))
    assert vm.status is VmStatus.CREATING and vm.node_id == "n-1"
    sent = standin.calls[-1].body
    assert sent["server_type"] == "cx32"  # medium: 4 vCPU, 8 GB, 80 GB as in the capacity map
    assert sent["user_data"] == "#cloud-config\n{}\n"
    assert sent["labels"] == node_labels("plane-a", "n-1")
    assert sent["location"] == "fsn1"
    await call(hz.create, spec("n-2"))
    mine = await call(hz.list, plane_labels("plane-a"))
    assert sorted(v.node_id or "" for v in mine) == ["n-1", "n-2"]
    assert [v.node_id for v in await call(hz.list, node_labels("plane-a", "n-2"))] == ["n-2"]
    assert await call(hz.list, plane_labels("plane-b")) == []
    assert (await call(hz.get, vm.provider_id)) is not None
    assert (await call(hz.get, vm.provider_id)).status is VmStatus.RUNNING  # type: ignore[union-attr]
    await call(hz.delete, vm.provider_id)
    assert await call(hz.get, vm.provider_id) is None
    await call(hz.delete, vm.provider_id)  # idempotent: gone already is what a delete wants
    # the token went in the Authorization header and nowhere else
    assert all(TOKEN not in repr((c.path, c.query, c.body)) for c in standin.calls)


async def test_rate_limit_says_when_to_come_back(api: tuple[StandIn, str]) -> None:
    standin, endpoint = api
    standin.fail("POST", "/v1/servers", "429", 37)
    hz = provider(endpoint, standin)
    with pytest.raises(ProviderError) as caught:
        await call(hz.create, spec())
    assert caught.value.transient and caught.value.retry_after_s == 37
    assert standin.live() == []  # refused: nothing made
    assert len([c for c in standin.calls if c.method == "POST"]) == 1  # no retry of its own
    assert (await call(hz.create, spec())).node_id == "n-1"  # the next step succeeds


async def test_server_error_is_transient_and_makes_nothing(api: tuple[StandIn, str]) -> None:
    standin, endpoint = api
    standin.fail("POST", "/v1/servers", "5xx", 503)
    with pytest.raises(ProviderError) as caught:
        await call(provider(endpoint, standin).create, spec())
    assert caught.value.transient and caught.value.retry_after_s is None
    assert standin.live() == []


async def test_a_create_that_answered_nothing_is_found_by_its_labels(
    api: tuple[StandIn, str],
) -> None:
    standin, endpoint = api
    standin.fail("POST", "/v1/servers", "no-answer")
    hz = provider(endpoint, standin, timeout_s=0.5)
    with pytest.raises(ProviderError) as caught:
        await call(hz.create, spec("n-7"))
    assert caught.value.transient
    # it was applied: the next step finds it instead of making a second VM
    found = await call(hz.list, node_labels("plane-a", "n-7"))
    assert [v.node_id for v in found] == ["n-7"] and len(standin.live()) == 1


async def test_a_server_stuck_initializing_stays_creating(api: tuple[StandIn, str]) -> None:
    standin, endpoint = api
    standin.stuck.add("vm-agent-n-1")
    hz = provider(endpoint, standin)
    vm = await call(hz.create, spec())
    for _ in range(3):
        assert (await call(hz.get, vm.provider_id)).status is VmStatus.CREATING  # type: ignore[union-attr]


async def test_refusals_are_final_and_never_carry_the_token(api: tuple[StandIn, str]) -> None:
    standin, endpoint = api
    wrong = HetznerProvider("not-the-token", endpoint=endpoint)
    with pytest.raises(ProviderError) as caught:
        await call(wrong.list, plane_labels("plane-a"))
    assert not caught.value.transient and "unauthorized" in str(caught.value)
    with pytest.raises(ProviderError) as caught:
        await call(provider(endpoint, standin).create, spec(size="huge"))
    assert not caught.value.transient
    await call(provider(endpoint, standin).create, spec("n-1"))
    with pytest.raises(ProviderError) as caught:  # the name is taken: a 409 that stays
        await call(provider(endpoint, standin).create, spec("n-1"))
    assert "uniqueness_error" in str(caught.value) and TOKEN not in str(caught.value)
