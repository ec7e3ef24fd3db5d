"""The ``dev`` provider: the daemon ``vm-agent dev`` started, as a node that exists already.

No VM is ever made. The dev command is the create: it starts its daemon and records the
daemon's node id and labels in a small state file (JSON); the lifecycle then finds that
"VM" by its labels, as it finds the VM of a create whose answer was lost, and adopts it.
``create`` adopts the daemon again (its node only: there is one daemon, so any other node
is refused, not made), ``delete`` forgets the labels and never stops the daemon (the dev
command owns it: Ctrl-C stops it), ``list`` answers the daemon while it carries them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from control_plane.providers.base import NODE_LABEL, ProviderError, Vm, VmSpec, VmStatus

NAME = "dev"


def record(state_file: Path, node_id: str, labels: Mapping[str, str] | None) -> None:
    """The daemon's node id and the labels it carries (None: forgotten), written whole."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    part = state_file.with_name(state_file.name + ".part")
    part.write_text(json.dumps({"node_id": node_id, "labels": labels}))
    os.replace(part, state_file)  # a reader sees the old file or the new one


class DevProvider:
    name = NAME

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file

    def _read(self) -> tuple[str | None, dict[str, str] | None]:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None, None  # no daemon was started: nothing to answer
        except (OSError, ValueError) as exc:
            why = f"dev provider state {self.state_file}: {exc}"
            raise ProviderError(why, transient=True) from None
        labels = state.get("labels")
        return state.get("node_id"), (dict(labels) if isinstance(labels, dict) else None)

    def _vm(self, node_id: str, labels: Mapping[str, str]) -> Vm:
        return Vm(provider_id=node_id, name=node_id, status=VmStatus.RUNNING, labels=labels)

    def create(self, spec: VmSpec) -> Vm:
        node_id, _ = self._read()
        wanted = spec.labels.get(NODE_LABEL)
        if node_id is None or wanted != node_id:
            raise ProviderError(
                f"the dev provider has one node, the daemon of `vm-agent dev` ({node_id}); "
                f"it makes no other ({wanted})",
                transient=False,
                applied=False,
            )
        record(self.state_file, node_id, dict(spec.labels))
        return self._vm(node_id, spec.labels)

    def delete(self, provider_id: str) -> None:
        node_id, labels = self._read()
        if node_id == provider_id and labels is not None:
            record(self.state_file, node_id, None)  # forgotten; the daemon runs on

    def list(self, labels: Mapping[str, str]) -> list[Vm]:
        node_id, carried = self._read()
        if node_id is None or carried is None:
            return []
        if any(carried.get(key) != value for key, value in labels.items()):
            return []
        return [self._vm(node_id, carried)]

    def get(self, provider_id: str) -> Vm | None:
        node_id, carried = self._read()
        if node_id != provider_id or carried is None:
            return None
        return self._vm(node_id, carried)
