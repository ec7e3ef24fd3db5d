"""The node lifecycle loop: placement's asks become VMs at a provider, idle ones are reaped.

A Kubernetes-style controller: each pass rows every node placement asked for, leases due
rows, asks ``providers.lifecycle.next_step`` for one step from what is recorded and
reported, takes it through the driver (in a worker thread) and records it. A create is
recorded before it is sent, and an unanswered one is looked for by labels first: a replica
killed anywhere leaves one VM, owned by its row. A sweep deletes our VMs no live row owns.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import anyio
from anyio import to_thread
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Engine

from cloud_init.params import SWAP_SIZE_MB_MAX, SWAPPINESS_MAX, SwapSettings
from control_plane.dispatch.addresses import record_vm_address
from control_plane.dispatch.node_boot import BootKit, node_user_data
from control_plane.dispatch.node_faults import FaultPoint, fault
from control_plane.dispatch.replace import place_again
from control_plane.identity.sealing import Sealer
from control_plane.providers.base import (
    Provider,
    ProviderError,
    Vm,
    VmSpec,
    node_labels,
    plane_labels,
)
from control_plane.providers.lifecycle import Decision, NodeFacts, NodePhase, Step, Timings
from control_plane.providers.lifecycle import next_step as decide
from control_plane.providers.lifecycle import orphans as find_orphans
from control_plane.providers.qemu.driver import QemuSettings
from control_plane.providers.registry import (
    DriverFactory,
    HetznerSettings,
    credential_for,
    missing_driver_reason,
    platform_accounts,
)
from control_plane.provisioning import userdata
from control_plane.storage import machines
from control_plane.storage.machines import Machine, Reported

log = logging.getLogger("control_plane.nodes")


class NodeSettings(BaseSettings):
    """CONTROL_PLANE_NODES_* variables (docs/control-plane.md)."""

    model_config = SettingsConfigDict(env_prefix="CONTROL_PLANE_NODES_", extra="ignore")

    enabled: bool = True
    pass_interval_s: float = 2.0
    lease_s: float = 180.0  # past the longest provider call (a create that never answers)
    batch: int = 50
    sweep_interval_s: float = 300.0
    ready_deadline_s: float = 900.0
    warm_window_s: float = 300.0
    lifetime_cap_s: float = 7 * 86400.0
    stale_after_s: float = 120.0
    lost_after_s: float = 900.0
    create_grace_s: float = 120.0
    delete_grace_s: float = 120.0
    drain_deadline_s: float = 3600.0
    agent_start_timeout_s: float | None = None  # the nodes' bound on an agent's start
    swap_mb: int = Field(default=SwapSettings().size_mb, ge=0, le=SWAP_SIZE_MB_MAX)
    swappiness: int = Field(default=SwapSettings().swappiness, ge=0, le=SWAPPINESS_MAX)
    backoff_first_s: float = 5.0
    backoff_max_s: float = 300.0
    kill_at: FaultPoint | None = None  # FAULT INJECTION, tests only (node_faults.py)

    @property
    def timings(self) -> Timings:
        return Timings(
            ready_deadline_s=self.ready_deadline_s,
            warm_window_s=self.warm_window_s,
            lifetime_cap_s=self.lifetime_cap_s,
            stale_after_s=self.stale_after_s,
            lost_after_s=self.lost_after_s,
            create_grace_s=self.create_grace_s,
            delete_grace_s=self.delete_grace_s,
            drain_deadline_s=self.drain_deadline_s,
        )


class NodeLifecycle:
    def __init__(
        self,
        engine: Engine,
        sealer: Sealer,
        kit: BootKit,
        plane: str,
        drivers: DriverFactory,
        *,
        settings: NodeSettings | None = None,
        hetzner: HetznerSettings | None = None,
        qemu: QemuSettings | None = None,
        clock: Callable[[], float],
        holder: str | None = None,
    ) -> None:
        self.engine = engine
        self.sealer = sealer
        self.kit = kit
        self.plane = plane
        self.drivers = drivers
        self.settings = settings or NodeSettings()
        self.hetzner = hetzner or HetznerSettings()
        self.qemu = qemu
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._last_sweep = float("-inf")

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except Exception:
                log.exception("node lifecycle pass failed; the next one tries again")
            await anyio.sleep(self.settings.pass_interval_s)

    async def pass_once(self) -> dict[str, Decision]:
        """One pass over every due node; what was decided for each (for tests and logs)."""
        now = self.clock()
        await to_thread.run_sync(machines.adopt_requests, self.engine, now)
        claimed = await to_thread.run_sync(
            machines.claim, self.engine, self.holder, now, self.settings.lease_s,
            self.settings.batch,
        )  # fmt: skip
        decided: dict[str, Decision] = {}
        if claimed:
            seen = await to_thread.run_sync(
                machines.reported, self.engine, [m.node_id for m in claimed]
            )
            for machine in claimed:
                try:
                    decided[machine.node_id] = await self._step(machine, seen[machine.node_id])
                finally:
                    await to_thread.run_sync(
                        machines.release, self.engine, machine.node_id, self.holder
                    )
        if now - self._last_sweep >= self.settings.sweep_interval_s:
            self._last_sweep = now
            await self.sweep()
        return decided

    def _facts(self, m: Machine, seen: Reported) -> NodeFacts:
        return NodeFacts(
            phase=NodePhase(m.phase),
            now=self.clock(),
            requested_at=m.requested_at,
            create_sent_at=m.create_sent_at,
            delete_sent_at=m.delete_sent_at,
            provider_id=m.provider_id,
            ready_at=m.ready_at if m.ready_at is not None else seen.ready_at,
            last_heard_at=seen.last_heard_at,
            reported_busy=seen.busy,
            reported_drained=seen.drained,
            drain_started_at=m.drain_started_at,
            open_tasks=seen.open_workspaces,
            idle_since=seen.last_released_at,
            retry_not_before=m.retry_not_before,
        )

    def _driver(self, m: Machine) -> Provider | None:
        cred = credential_for(
            self.engine, self.sealer, m.owner, m.provider, self.hetzner, qemu=self.qemu
        )
        return None if cred is None else self.drivers(m.provider, cred)

    async def _step(self, m: Machine, seen: Reported) -> Decision:
        facts = self._facts(m, seen)
        decision = decide(facts, self.settings.timings)
        driver = None
        if decision.step in (Step.OBSERVE, Step.CREATE, Step.DELETE):
            driver = await to_thread.run_sync(self._driver, m)
            if driver is None:
                why = missing_driver_reason(m.provider)
                # kept as asked: credentials given later make it (its tasks wait meanwhile,
                # and the dispatcher ends them after its node deadline, with the reason)
                if m.reason != why:
                    log.warning("node %s: %s", m.node_id, why)
                await self._record(
                    m, reason=why, retry_not_before=self.clock() + self.settings.backoff_max_s
                )
                return Decision(Step.WAIT, why)
        found: list[Vm] = []
        if decision.step is Step.OBSERVE:
            assert driver is not None
            try:
                found = await to_thread.run_sync(driver.list, node_labels(self.plane, m.node_id))
            except ProviderError as exc:
                await self._backoff(m, exc)
                return Decision(Step.WAIT, str(exc))
            facts = replace(
                facts,
                listed=True,
                vm_found=bool(found),
                vm_status=found[0].status if found else None,
            )
            decision = decide(facts, self.settings.timings)
        if decision.step is not Step.WAIT:
            log.info("node %s: %s (%s)", m.node_id, decision.step.value, decision.reason)
        await self._take(m, decision, driver, found, facts)
        return decision

    async def _take(
        self, m: Machine, d: Decision, driver: Provider | None, found: list[Vm], f: NodeFacts
    ) -> None:
        now = self.clock()
        match d.step:
            case Step.CREATE:
                assert driver is not None
                await self._create(m, driver)
            case Step.ADOPT:
                await to_thread.run_sync(record_vm_address, self.engine, m.node_id, found[0], now)
                await self._record(m, provider_id=found[0].provider_id, phase=NodePhase.BOOTING)
            case Step.MARK_READY:
                await self._record(m, phase=NodePhase.READY, ready_at=f.ready_at)  # its own
            case Step.DRAIN:  # the next heartbeat's answer tells the daemon
                drain = partial(machines.record_drain, reason=d.reason, idle_since=f.idle_since)
                if not await to_thread.run_sync(drain, self.engine, m, self.holder, now):
                    log.info("node %s: a task was placed on it meanwhile: kept", m.node_id)
            case Step.DELETE:
                assert driver is not None
                if d.replace_tasks:  # before the delete is recorded: taken again if cut short
                    await to_thread.run_sync(place_again, self.engine, m.node_id, d.reason, now)
                await self._record(m, phase=NodePhase.DELETING, delete_sent_at=now, reason=d.reason)
                fault(self.settings.kill_at, "delete_recorded")
                if m.provider_id is not None:
                    try:
                        await to_thread.run_sync(driver.delete, m.provider_id)
                    except ProviderError as exc:
                        await self._backoff(m, exc)
                    fault(self.settings.kill_at, "delete_sent")
            case Step.FORGET:
                await self._record(m, phase=NodePhase.GONE)
            case Step.WAIT | Step.OBSERVE:
                pass

    async def _create(self, m: Machine, driver: Provider) -> None:
        # the create is on record before it is sent: a replica killed during the call
        # leaves a row the next one looks up by label before it would send another
        try:
            user_data = await to_thread.run_sync(self._user_data, m)
        except Exception as exc:  # any reason the user-data cannot be made (no artifacts)
            why = f"cannot make user-data: {exc}"
            if m.reason != why:
                log.error("node %s: %s", m.node_id, why)
            await self._record(
                m, reason=why, retry_not_before=self.clock() + self.settings.backoff_max_s
            )
            return
        await self._record(m, phase=NodePhase.CREATING, create_sent_at=self.clock())
        fault(self.settings.kill_at, "create_recorded")
        spec = VmSpec(
            name=f"vm-agent-{m.node_id}",
            size=m.size,
            region=self.hetzner.location,
            image=self.hetzner.image,
            user_data=user_data,
            labels=node_labels(self.plane, m.node_id),
        )
        try:
            vm = await to_thread.run_sync(driver.create, spec)
        except ProviderError as exc:
            if exc.applied is False:
                # refused: nothing was made, so the next step creates again (after a wait)
                await self._record(m, phase=NodePhase.REQUESTED, create_sent_at=None)
            if not exc.transient:
                await self._record(m, phase=NodePhase.GONE, reason=str(exc))
                log.error("node %s: the provider refused to make it: %s", m.node_id, exc)
                return
            await self._backoff(m, exc)
            return
        fault(self.settings.kill_at, "create_sent")
        # where the dispatcher reaches it: what the provider said (no admin PUT needed)
        await to_thread.run_sync(record_vm_address, self.engine, m.node_id, vm, self.clock())
        await self._record(m, provider_id=vm.provider_id, phase=NodePhase.BOOTING, failures=0)

    def _user_data(self, m: Machine) -> str:
        s = self.settings
        swap = SwapSettings(size_mb=s.swap_mb, swappiness=s.swappiness)
        request = userdata.NodeRequest(agent_start_timeout_s=s.agent_start_timeout_s, swap=swap)
        return node_user_data(self.engine, self.kit, request, m, self.clock())

    async def _backoff(self, m: Machine, exc: ProviderError) -> None:
        s = self.settings
        wait = exc.retry_after_s
        if wait is None:
            wait = min(s.backoff_max_s, s.backoff_first_s * 2 ** min(m.failures, 16))
        await self._record(
            m, retry_not_before=self.clock() + wait, failures=m.failures + 1, reason=str(exc)
        )
        log.warning("node %s: %s; again in %.0f s", m.node_id, exc, wait)

    async def _record(self, m: Machine, **values: object) -> None:
        if "phase" in values and isinstance(values["phase"], NodePhase):
            values["phase"] = values["phase"].value
        if not await to_thread.run_sync(
            lambda: machines.record(self.engine, m, self.holder, **values)
        ):
            log.warning("node %s: lost its lease; another replica takes it from here", m.node_id)

    async def sweep(self) -> list[str]:
        """Deletes VMs carrying this plane's labels that no live row owns; their ids."""
        deleted: list[str] = []
        for provider, cred in await to_thread.run_sync(self._accounts):
            driver = self.drivers(provider, cred)
            if driver is None:
                continue
            try:
                vms = await to_thread.run_sync(driver.list, plane_labels(self.plane))
                fault(self.settings.kill_at, "sweep_listed")
                # the rows are read after the listing: a row is made before its VM, so a
                # VM another replica made meanwhile has its row by now (read first, it
                # would look orphaned)
                live = await to_thread.run_sync(machines.live_node_ids, self.engine)
                for pid in find_orphans({v.provider_id: v.node_id for v in vms}, live):
                    log.warning("sweep: deleting VM %s at %s: no node owns it", pid, provider)
                    await to_thread.run_sync(driver.delete, pid)
                    deleted.append(pid)
                    fault(self.settings.kill_at, "sweep_deleted")
            except ProviderError as exc:
                log.warning("sweep of %s skipped: %s", provider, exc)
        return deleted

    def _accounts(self) -> list[tuple[str, str]]:
        """Every (provider, credential) this plane may have VMs under, each once."""
        pairs = dict.fromkeys(platform_accounts(self.hetzner, self.qemu))
        for owner, provider in machines.owners_and_providers(self.engine):
            cred = credential_for(
                self.engine, self.sealer, owner, provider, self.hetzner, qemu=self.qemu
            )
            if cred is not None:
                pairs[(provider, cred)] = None
        return list(pairs)
