"""A node the control plane made, booted from its own user-data, and what tests ask of it:
waiting for `ready` at the control plane, the unit's state, the journal, a viewer through
the forwarded port that verifies the node's certificate, the figures of its boot.
"""

from __future__ import annotations

import json
import shlex
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.daemon.harness import Viewer
from tests.vm import timeline as tl
from tests.vm.figures import FigureBook, StepTiming, parse_timings
from tests.vm.machine import VM, GuestCommandError, GuestResult
from tests.vm.plane_host import CreatedNode, HostPlane
from tests.vm.relay import Relay

UNIT = "vm-agent.service"
VIEWER_PORT = 8080
TIMINGS_FILE = "/var/lib/vm-agent-provision/timings"
READY = "ready_at_control_plane"
# a boot installs ~170 MB of artifacts under TCG; a loaded host makes it slower still
READY_SECONDS = 1500.0
CLOUD_INIT_CHECK_S = 20.0


class NodeBootFailed(AssertionError):
    pass


_SPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}


def seconds_of(timespan: str) -> float:
    """systemd's rendering of a time span ("5s", "1min", "1min 30s", "100ms") in seconds."""
    if not timespan.split():
        raise ValueError(f"not a systemd time span: {timespan!r}")
    total = 0.0
    for part in timespan.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = part[len(number) :]
        if unit not in _SPAN_UNITS or not number:
            raise ValueError(f"not a systemd time span: {timespan!r}")
        total += float(number) * _SPAN_UNITS[unit]
    return total


@dataclass
class BootedNode:
    vm: VM
    plane: HostPlane
    created: CreatedNode
    relay: Relay | None  # the harness's relay to the control plane, if it made one
    label: str
    # host wall-clock time of qemu's start (the control plane's times are wall-clock)
    qemu_started_wall: float = field(init=False)
    _viewer_tls: ssl.SSLContext | None = field(init=False, default=None)
    # `cloud-init status --wait --long` once the boot is through
    cloud_init: GuestResult | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.qemu_started_wall = time.time() - self.vm.elapsed()

    def viewer_tls(self) -> ssl.SSLContext:
        """The node CA from GET /api/node-ca.pem. Fetch it from the test's thread (it
        blocks on the control plane, whose loop the viewers share)."""
        if self._viewer_tls is None:
            self._viewer_tls = self.plane.node_ca_context()
        return self._viewer_tls

    @property
    def node_id(self) -> str:
        return self.created.node_id

    @property
    def dns_name(self) -> str:
        return str(self.created.answer["dns_name"])

    # readiness

    def ready_at(self) -> float | None:
        ready = self.plane.node(self.node_id).get("ready_at")
        return None if ready is None else float(ready)

    def wait_ready(self, after: float = 0.0, timeout: float = READY_SECONDS) -> float:
        """The control plane's ready_at (wall clock), once it is later than `after`.
        Fails early, with the provisioning log, when cloud-init ends in error."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + CLOUD_INIT_CHECK_S
        while True:
            ready = self.ready_at()
            if ready is not None and ready > after:
                return ready
            if not self.vm.alive():
                raise NodeBootFailed(f"qemu exited before ready\n{self.vm.failure_report(200)}")
            if time.monotonic() > next_check:
                next_check = time.monotonic() + CLOUD_INIT_CHECK_S
                status = self.vm.run(["cloud-init", "status"], timeout=60)
                if "error" in status.stdout:
                    raise NodeBootFailed(f"cloud-init failed:\n{self.provision_log()}")
            if time.monotonic() > deadline:
                raise NodeBootFailed(
                    f"no ready at the control plane after {timeout:g} s\n"
                    f"{self.unit_status()}\n{self.journal(lines=80)}"
                )
            time.sleep(2)

    def record_boot(self, ready_wall: float, book: FigureBook) -> list[StepTiming]:
        """The boot's figures: to ready from qemu's and cloud-init's start, each step."""
        from_qemu = ready_wall - self.qemu_started_wall
        self.vm.timeline.mark(READY, from_qemu)
        book.add(self.label, "qemu start to ready at the control plane", from_qemu, "s")
        cloud_init = self.vm.timeline.since(READY, tl.CLOUD_INIT_START)
        if cloud_init is not None:
            book.add(self.label, "cloud-init start to ready at the control plane", cloud_init, "s")
        steps = parse_timings(self.vm.read_text(TIMINGS_FILE))
        for step in steps:
            book.add(self.label, f"step {step.step}", step.seconds or "failed", "s")
        installs = [s.seconds for s in steps if s.seconds is not None]
        book.add(self.label, "all provisioning steps", sum(installs), "s")
        return steps

    # the unit

    def unit(self, *properties: str) -> dict[str, str]:
        shown = self.vm.run(
            ["systemctl", "show", UNIT, *(f"--property={p}" for p in properties)], check=True
        )
        pairs = (line.partition("=") for line in shown.stdout.splitlines())
        return {key: value for key, _, value in pairs}

    def main_pid(self) -> int:
        return int(self.unit("MainPID")["MainPID"])

    def unit_status(self) -> str:
        return self.vm.run(["systemctl", "status", "--no-pager", "--lines=0", UNIT]).stdout

    def journal(self, *, lines: int = 200, since: str | None = None) -> str:
        argv = ["journalctl", "--no-pager", "-o", "cat", "-u", UNIT, "-n", str(lines)]
        if since is not None:
            argv += ["--since", since]
        return self.vm.run(argv, timeout=60).stdout

    def guest_now(self) -> str:
        """The guest's clock as journalctl --since takes it."""
        return self.vm.run(["date", "+%Y-%m-%d %H:%M:%S"], check=True).stdout.strip()

    def wait_active(self, timeout: float = 600.0) -> None:
        try:
            self.vm.wait_for(["systemctl", "is-active", "--quiet", UNIT], timeout=timeout)
        except GuestCommandError:
            raise NodeBootFailed(f"{UNIT} not active\n{self.unit_status()}") from None

    def restart(self, timeout: float = 600.0) -> float:
        """`systemctl restart` and wait for the new daemon's ready; its ready_at."""
        before = self.ready_at() or 0.0
        self.vm.run(["systemctl", "restart", UNIT], timeout=timeout, check=True)
        return self.wait_ready(after=before, timeout=timeout)

    def provision_log(self) -> str:
        shown = self.vm.sh(
            "cloud-init status --long; echo; cat /var/lib/vm-agent-provision/timings; echo;"
            " tail -n 60 /var/log/cloud-init-output.log",
            timeout=60,
        )
        return shown.stdout + shown.stderr

    # files

    def append_text(self, path: str, text: str) -> None:
        self.vm.sh(f"printf %s {shlex.quote(text)} >> {shlex.quote(path)}", check=True)

    # viewers

    def viewer_url(self) -> str:
        return f"wss://127.0.0.1:{self.vm.host_port(VIEWER_PORT)}/v1/ws"

    @asynccontextmanager
    async def viewer(
        self,
        subject: str = "vm-test-user",
        scopes: tuple[str, ...] = ("read", "write"),
        token: str | None = None,
    ) -> AsyncIterator[Viewer]:
        """A viewer on the host through the forward, verifying the node's certificate
        against the CA the control plane publishes, under the node's own name."""
        if self._viewer_tls is None:
            raise RuntimeError("call node.viewer_tls() from the test's thread first")
        token = token or self.plane.viewer_token(self.node_id, subject, scopes)
        async with Viewer.connect(
            self.viewer_url(),
            token,
            ssl=self._viewer_tls,
            server_hostname=self.dns_name,
            open_timeout=60,
        ) as viewer:
            yield viewer


def text_prompt(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def message_text(events: list[dict[str, Any]]) -> str:
    """The agent's message chunks in a viewer's events, joined."""
    parts = []
    for event in events:
        update = event["data"].get("update", {}) if event["type"] == "acp.update" else {}
        if update.get("sessionUpdate") == "agent_message_chunk":
            parts.append(str(update.get("content", {}).get("text", "")))
    return "".join(parts)


def json_line(text: str) -> Any:
    return json.loads(text)
