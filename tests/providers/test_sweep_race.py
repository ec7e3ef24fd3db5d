"""The sweep against a replica creating at the same moment, on both databases: a node row
and its VM made by another replica while the sweep lists (row first, as ownership before
creation has it) is not taken for an orphan. The sweep reads the live rows after the
listing; read before it, the new VM's row was missing and the VM was deleted."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from sqlalchemy import Engine

from control_plane.dispatch.nodes import NodeLifecycle
from control_plane.providers.base import Provider, Vm, VmSpec, node_labels
from control_plane.storage import machines
from tests.providers.hetzner_standin import StandIn
from tests.providers.test_node_loop import PLANE, TOKEN, Clock, api, ask_for_node, loop

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
__all__ = ["api"]  # the stand-in fixture


class CreatingMeanwhile:
    """The real driver, but another replica asks for a node and makes its VM just before
    the listing reaches the provider."""

    def __init__(self, real: Provider, engine: Engine, now: float) -> None:
        self.real, self.engine, self.now = real, engine, now
        self.name = real.name

    def create(self, spec: VmSpec) -> Vm:
        return self.real.create(spec)

    def delete(self, provider_id: str) -> None:
        self.real.delete(provider_id)

    def get(self, provider_id: str) -> Vm | None:
        return self.real.get(provider_id)

    def list(self, labels: Mapping[str, str]) -> list[Vm]:
        ask_for_node(self.engine, "n-new", "alice", self.now)
        machines.adopt_requests(self.engine, self.now)  # the row, then its VM
        self.real.create(
            VmSpec(name="vm-agent-n-new", size="small", region=None, image="debian-12",
                   user_data="", labels=node_labels(PLANE, "n-new"))
        )  # fmt: skip
        return self.real.list(labels)


async def test_a_vm_made_while_the_sweep_lists_is_not_an_orphan(
    engine: Engine, api: tuple[StandIn, str]
) -> None:
    standin, endpoint = api
    clock = Clock()
    ask_for_node(engine, "n-old", "alice", clock.now)
    nl: NodeLifecycle = loop(engine, endpoint, clock)
    real = nl.drivers("hetzner", TOKEN)
    assert real is not None
    nl.drivers = lambda _provider, _cred: CreatingMeanwhile(real, engine, clock.now)
    assert await nl.sweep() == []
    assert [s["name"] for s in standin.live()] == ["vm-agent-n-new"]
