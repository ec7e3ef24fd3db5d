"""The one interface every provider driver speaks, and the labels that make a VM ours.

Ownership comes before creation (docs/control-plane.md): a node's row exists, with the
labels its VM will carry, before a driver is asked for the VM, so a VM whose labels name
no row is an orphan that the sweep may delete, and a create whose answer was lost is
found again by its labels instead of being sent twice.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

MANAGED_LABEL = "vm-agent/managed"
NODE_LABEL = "vm-agent/node"
PLANE_LABEL = "vm-agent/plane"
# Hetzner's (and Kubernetes') label value rule, which the strictest provider sets.
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


class VmStatus(enum.StrEnum):
    """What a provider says of a VM, in our words."""

    CREATING = "creating"  # accepted, not booted yet (Hetzner: initializing, starting)
    RUNNING = "running"
    STOPPED = "stopped"
    DELETING = "deleting"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class VmSpec:
    """A VM to make: ``size`` is the provider's own size name (a server type)."""

    name: str
    size: str
    region: str | None
    image: str
    user_data: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Vm:
    provider_id: str
    name: str
    status: VmStatus
    labels: Mapping[str, str] = field(default_factory=dict)
    address: str | None = None  # where the node is reached: a public IP, or 127.0.0.1 (qemu)
    viewer_port: int | None = None  # a port in front of the daemon's (qemu's host forward)

    @property
    def node_id(self) -> str | None:
        return self.labels.get(NODE_LABEL)

    def viewer_url(self, node_port: int) -> str | None:
        """The daemon's `/v1/ws` at this VM (TLS: the node's certificate is checked under
        its own name, whatever host this names), or None while the provider gave no
        address. ``node_port`` is the daemon's own port, used without a port in front."""
        if not self.address:
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"wss://{host}:{self.viewer_port or node_port}/v1/ws"


class ProviderError(Exception):
    """A call failed. ``transient``: try again, not before ``retry_after_s`` if given.

    ``applied``: False when the provider answered that it did nothing (a 4xx, a 429); None
    when it is not known (no answer, a 5xx): a create may then have made a VM after all.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        retry_after_s: float | None = None,
        applied: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after_s = retry_after_s
        self.applied = applied


class Provider(Protocol):
    """A cloud (or a machine) that makes and deletes VMs. Every call may block: the
    dispatcher runs them in a worker thread, each as one leased, resumable step."""

    name: str

    def create(self, spec: VmSpec) -> Vm: ...

    def delete(self, provider_id: str) -> None:
        """Idempotent: deleting a VM that is gone already is not an error."""

    def list(self, labels: Mapping[str, str]) -> list[Vm]:
        """Every VM carrying all of ``labels``."""

    def get(self, provider_id: str) -> Vm | None: ...


def node_labels(plane_id: str, node_id: str) -> dict[str, str]:
    """The labels a node's VM carries: ours, which control plane's, which node."""
    labels = {MANAGED_LABEL: "true", PLANE_LABEL: plane_id, NODE_LABEL: node_id}
    for key, value in labels.items():
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label {key}={value!r} is not a valid label value")
    return labels


def plane_labels(plane_id: str) -> dict[str, str]:
    """What every VM of this control plane carries (the sweep lists by these)."""
    return {MANAGED_LABEL: "true", PLANE_LABEL: plane_id}


def label_selector(labels: Mapping[str, str]) -> str:
    """``a=b,c=d``: the selector syntax of Hetzner's (and Kubernetes') list calls."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
