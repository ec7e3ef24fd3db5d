"""Starting qemu for one run: the NoCloud seed, free ports, the process under its reaper,
the console watched for milestones.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import yaml

from control_plane.providers.qemu.command import (
    KVM_NOT_USED,
    HostForward,
    KvmKind,
    QemuSpec,
    qemu_argv,
)
from control_plane.providers.qemu.driver import host_kvm
from tests.vm import timeline as tl

REAPER = Path(__file__).with_name("reaper.py")
# where KVM works, a guest reaches systemd in a few seconds
KVM_PROBE_SECONDS = 30.0
# qemu either fails at once (a taken port, a bad option) or starts the guest
START_SECONDS = 120.0
PORT_ATTEMPTS = 3


class VMBootError(RuntimeError):
    """qemu did not start, or the guest did not come up; the message carries the console."""


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the caller binds it soon, or retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def meta_data(instance_id: str, hostname: str) -> str:
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname})


def make_seed(
    directory: Path, user_data: str, hostname: str, network_config: str | None = None
) -> tuple[Path, str]:
    """A NoCloud seed (ISO labelled cidata) with this user-data and a fresh instance-id,
    so cloud-init treats every run as a first boot."""
    instance_id = f"vm-test-{uuid.uuid4().hex[:12]}"
    (directory / "user-data").write_text(user_data)
    (directory / "meta-data").write_text(meta_data(instance_id, hostname))
    seed = directory / "seed.img"
    argv = ["cloud-localds"]
    if network_config is not None:
        (directory / "network-config").write_text(network_config)
        argv.append(f"--network-config={directory / 'network-config'}")
    argv += [str(seed), str(directory / "user-data"), str(directory / "meta-data")]
    subprocess.run(argv, check=True, capture_output=True)
    return seed, instance_id


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ConsoleWatcher:
    """Reads the console log as qemu writes it and marks the milestones it shows."""

    def __init__(self, path: Path, on_mark: Callable[[str], None]) -> None:
        self._path = path
        self._on_mark = on_mark
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vm-console", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        offset, pending = 0, b""
        while not self._stop.wait(0.1):
            try:
                with self._path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                continue
            if not chunk:
                continue
            if offset == 0:
                self._on_mark(tl.FIRST_CONSOLE)
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                name = tl.console_mark(line.decode(errors="replace"))
                if name is not None:
                    self._on_mark(name)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Running(Protocol):
    """A running qemu as a VM is driven through it: this harness's (`Started`) or one the
    control plane's qemu driver made (tests/vm/adopted.py)."""

    spec: QemuSpec
    origin: float  # time.monotonic() at qemu's start
    timeline: tl.Timeline
    qemu_log: Path
    notes: list[str]

    def alive(self) -> bool: ...

    def kill(self) -> None: ...


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    spec: QemuSpec
    origin: float
    timeline: tl.Timeline
    watcher: ConsoleWatcher
    qemu_log: Path
    killed: bool = False
    # what happened on the way (an accelerator tried and left), for the run's report
    notes: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Kill qemu's whole process group (qemu, its socat children, the reaper), once."""
        if self.killed:
            return
        self.killed = True
        self.watcher.stop()
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        # an orphan is a failure, not a leftover: wait until the group is empty
        deadline = time.monotonic() + 30
        while _group_exists(self.process.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"qemu's process group {self.process.pid} outlived SIGKILL")
            time.sleep(0.1)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _spawn(spec: QemuSpec, qemu_log: Path) -> Started:
    for stale in (spec.console_log, spec.agent_socket):
        if stale is not None:
            stale.unlink(missing_ok=True)
    timeline = tl.Timeline()
    with qemu_log.open("wb") as log:
        origin = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-I", str(REAPER), *qemu_argv(spec)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    timeline.mark(tl.QEMU_START, 0.0)

    def on_mark(name: str) -> None:
        timeline.mark(name, time.monotonic() - origin)

    watcher = ConsoleWatcher(spec.console_log, on_mark)
    return Started(process, spec, origin, timeline, watcher, qemu_log)


def _wait_for(started: Started, mark: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if mark in started.timeline.marks:
            return True
        if not started.alive():
            return False
        time.sleep(0.1)
    return mark in started.timeline.marks


_PORT_TAKEN = re.compile(r"host forwarding rule|Could not set up host forwarding", re.I)


def boot_failure(started: Running, why: str) -> VMBootError:
    return VMBootError(
        f"{why}\n--- qemu ({started.qemu_log}) ---\n{tail(started.qemu_log, 40)}"
        f"\n--- console ({started.spec.console_log}) ---\n{tail(started.spec.console_log, 80)}"
    )


def accelerators(requested: str, kvm_usable: bool) -> list[str]:
    """The accelerators to try, in order."""
    if requested == "auto":
        return ["kvm", "tcg"] if kvm_usable else ["tcg"]
    if requested in ("kvm", "tcg"):
        return [requested]
    raise ValueError(f"unknown accelerator {requested!r} (auto, kvm or tcg)")


def kvm_not_tried(requested: str, kind: KvmKind) -> str | None:
    """The run report's line when `auto` goes straight to TCG: why KVM was not tried."""
    if requested != "auto" or kind == "hardware":
        return None
    return f"accel auto: TCG, KVM not tried ({KVM_NOT_USED[kind]})"


def _start_with(
    spec: QemuSpec, guest_ports: Sequence[int], qemu_log: Path, wanted: str, seconds: float
) -> Started:
    for _ in range(PORT_ATTEMPTS):
        forwards = tuple(HostForward(free_port(), port) for port in guest_ports)
        started = _spawn(replace(spec, host_forwards=forwards), qemu_log)
        if _wait_for(started, wanted, seconds):
            return started
        failure = boot_failure(started, f"qemu ({spec.accel}) did not start the guest")
        started.kill()
        if not _PORT_TAKEN.search(tail(qemu_log, 40)):
            raise failure
    raise VMBootError(f"no free host ports after {PORT_ATTEMPTS} attempts")


def start(spec: QemuSpec, guest_ports: Sequence[int], run_dir: Path) -> Started:
    """qemu running the guest; host forwards get free ports (retried when one was taken
    before qemu bound it). accel 'auto' tries KVM where hardware serves /dev/kvm (not on
    these machines: it is PVM there, see command.kvm_kind) and falls back to TCG unless
    the guest reaches systemd within KVM_PROBE_SECONDS."""
    if not shutil.which("qemu-system-x86_64"):
        raise VMBootError("qemu-system-x86_64 not found (Debian package qemu-system-x86)")
    kind = host_kvm()
    tried = accelerators(spec.accel, kind == "hardware")
    note = kvm_not_tried(spec.accel, kind)
    notes = [] if note is None else [note]
    for accel in tried[:-1]:
        began = time.monotonic()
        log = run_dir / f"qemu-{accel}.log"
        try:
            started = _start_with(
                replace(spec, accel=accel), guest_ports, log, tl.SYSTEMD, KVM_PROBE_SECONDS
            )
        except VMBootError:
            last = (tail(log, 1) or "the guest printed nothing").strip()
            notes.append(f"{accel} tried for {time.monotonic() - began:.1f} s: {last}")
            continue
        started.notes.extend(notes)
        return started
    started = _start_with(
        replace(spec, accel=tried[-1]),
        guest_ports,
        run_dir / "qemu.log",
        tl.FIRST_CONSOLE,
        START_SECONDS,
    )
    started.notes.extend(notes)
    return started
