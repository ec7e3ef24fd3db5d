"""A booted guest, driven from the host: commands and files through qemu-guest-agent,
forwarded ports, the console, the run's timings.

    with boot_vm(image, user_data, guest_ports=[8080]) as vm:
        vm.wait_cloud_init()
        vm.run(["systemctl", "is-active", "x"]).stdout

Blocking calls (threads may share a VM); from async code use `anyio.to_thread.run_sync`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from control_plane.providers.qemu.command import GUEST_FORWARD_ADDRESS, GuestForward, QemuSpec
from tests.vm import timeline as tl
from tests.vm.image import VMImage
from tests.vm.launch import Running, VMBootError, boot_failure, make_seed, start, tail
from tests.vm.qga import GuestAgent, GuestAgentTimeout

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# what `timeout` waits after its TERM before it KILLs, and what it exits with then
KILL_AFTER = 5
TIMED_OUT = (124, 137)
AGENT_SECONDS = 900.0
CLOUD_INIT_SECONDS = 1500.0


class RunOptions(TypedDict, total=False):
    """`VM.run`'s keyword options, for the helpers that pass them on."""

    timeout: float
    check: bool
    stdin: bytes | None
    env: Mapping[str, str] | None


class GuestCommandError(AssertionError):
    """A guest command failed where the caller asked it to succeed."""

    def __init__(self, result: GuestResult, why: str = "failed") -> None:
        super().__init__(f"{why}: {result.describe()}")
        self.result = result


class GuestCommandTimeout(GuestCommandError):
    """A guest command outlived its timeout (and was killed in the guest)."""


@dataclass(frozen=True)
class GuestResult:
    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        how = f"exit {self.exit_code}" if self.signal is None else f"signal {self.signal}"
        return (
            f"guest command {list(self.argv)} ({how}, {self.seconds:.1f} s)\n"
            f"stdout: {self.stdout[-4000:]!r}\nstderr: {self.stderr[-4000:]!r}"
        )

    def check(self) -> GuestResult:
        if not self.ok:
            raise GuestCommandError(self)
        return self


class VM:
    """One running guest. Made by `boot_vm`, which also stops it."""

    def __init__(
        self, started: Running, agent: GuestAgent, run_dir: Path, instance_id: str
    ) -> None:
        self._started = started
        self.agent = agent
        self.run_dir = run_dir
        self.instance_id = instance_id
        self.timeline = started.timeline
        self.guest_forward_address = GUEST_FORWARD_ADDRESS
        # lines for the session's summary (what a test found worth reporting)
        self.notes: list[str] = list(started.notes)

    # the run

    @property
    def console_log(self) -> Path:
        return self._started.spec.console_log

    @property
    def qemu_log(self) -> Path:
        return self._started.qemu_log

    @property
    def accel(self) -> str:
        return self._started.spec.accel

    def alive(self) -> bool:
        return self._started.alive()

    def elapsed(self) -> float:
        """Seconds since qemu started."""
        return time.monotonic() - self._started.origin

    def mark(self, name: str) -> float:
        """Record milestone `name` now (the first time counts); its seconds from qemu start."""
        self.timeline.mark(name, self.elapsed())
        return self.timeline.marks[name]

    def note(self, text: str) -> None:
        """A line for the run's report (printed in the VM tests' summary)."""
        self.notes.append(text)

    def host_port(self, guest_port: int) -> int:
        """The port on the host's 127.0.0.1 that reaches `guest_port` in the guest."""
        for forward in self._started.spec.host_forwards:
            if forward.guest_port == guest_port:
                return forward.host_port
        raise KeyError(f"guest port {guest_port} is not forwarded")

    def console(self) -> str:
        return self.console_log.read_text(errors="replace")

    def wait_console(self, pattern: str, timeout: float = 300.0) -> str:
        """The first console line matching `pattern`, waiting for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.console().splitlines():
                if regex.search(line):
                    return line
            self._ensure_alive(f"waiting for {pattern!r} on the console")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} not on the console after {timeout} s")
            time.sleep(0.5)

    def failure_report(self, console_lines: int = 1000) -> str:
        return (
            f"run dir {self.run_dir} (kept only with VM_TEST_KEEP=1), accel {self.accel}, "
            f"instance-id {self.instance_id}\n"
            + "\n".join(self.timeline.report())
            + f"\n--- qemu log ---\n{tail(self.qemu_log, 40)}"
            + f"\n--- console (last {console_lines} lines of {self.console_log}) ---\n"
            + tail(self.console_log, console_lines)
        )

    def _ensure_alive(self, doing: str) -> None:
        if not self.alive():
            raise boot_failure(self._started, f"qemu exited while {doing}")

    # readiness

    def wait_agent(self, timeout: float = AGENT_SECONDS) -> float:
        """Wait until the guest agent answers; seconds from qemu start."""
        deadline = time.monotonic() + timeout
        while not self.agent.sync(timeout=3.0):
            self._ensure_alive("waiting for the guest agent")
            if time.monotonic() > deadline:
                raise boot_failure(self._started, f"no guest agent after {timeout} s")
        return self.mark(tl.AGENT_UP)

    def wait_cloud_init(self, timeout: float = CLOUD_INIT_SECONDS) -> GuestResult:
        """`cloud-init status --wait --long` (exit 0: done; 1: error, with the detail)."""
        result = self.run(["cloud-init", "status", "--wait", "--long"], timeout=timeout)
        self.mark(tl.CLOUD_INIT_DONE)
        return result

    # commands and files

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 120.0,
        check: bool = False,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> GuestResult:
        """Run argv in the guest as root (PATH is searched). After `timeout` seconds the
        guest's `timeout` kills its process group and GuestCommandTimeout is raised."""
        wrapped = ["/usr/bin/timeout", f"--kill-after={KILL_AFTER}", f"{timeout:g}", *argv]
        began = time.monotonic()
        try:
            pid = self.agent.exec_start(wrapped, {"PATH": DEFAULT_PATH, **(env or {})}, stdin)
            status = self.agent.exec_wait(pid, timeout + KILL_AFTER + 60)
        except GuestAgentTimeout:
            self._ensure_alive(f"running {list(argv)}")
            raise
        result = GuestResult(
            argv=tuple(argv),
            exit_code=status.exit_code,
            signal=status.signal,
            stdout=status.stdout.decode(errors="replace"),
            stderr=status.stderr.decode(errors="replace"),
            seconds=time.monotonic() - began,
        )
        if result.exit_code in TIMED_OUT and result.seconds >= timeout:
            raise GuestCommandTimeout(result, f"timed out after {timeout:g} s")
        return result.check() if check else result

    def run_as(self, user: str, argv: Sequence[str], **options: Unpack[RunOptions]) -> GuestResult:
        """`run` as `user` (runuser: that user's uid, groups, HOME and SHELL)."""
        return self.run(["runuser", "-u", user, "--", *argv], **options)

    def sh(self, script: str, **options: Unpack[RunOptions]) -> GuestResult:
        """A shell script run by `sh -c` as root."""
        return self.run(["sh", "-c", script], **options)

    def wait_for(
        self, argv: Sequence[str], *, timeout: float = 300.0, interval: float = 1.0
    ) -> GuestResult:
        """Run argv until it exits 0 (e.g. `systemctl is-active x`); its last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.run(argv, timeout=max(1.0, min(60.0, deadline - time.monotonic())))
            if result.ok:
                return result
            if time.monotonic() + interval > deadline:
                raise GuestCommandError(result, f"did not succeed within {timeout:g} s")
            time.sleep(interval)

    def read_file(self, path: str) -> bytes:
        return self.agent.read_file(path)

    def read_text(self, path: str) -> str:
        return self.read_file(path).decode()

    def write_file(self, path: str, data: bytes) -> None:
        self.agent.write_file(path, data)

    def stop(self) -> None:
        """Kill qemu (and everything it started); safe to call twice."""
        self.agent.close()
        self._started.kill()


def _run_root() -> str:
    # short: the guest agent's unix socket path must fit in 108 bytes
    return os.environ.get("VM_TEST_RUN_DIR") or tempfile.gettempdir()


@contextmanager
def boot_vm(
    image: VMImage,
    user_data: str,
    *,
    guest_ports: Sequence[int] = (),
    guest_forwards: Sequence[GuestForward] = (),
    hostname: str = "vm-test",
    network_config: str | None = None,
    accel: str | None = None,
    cpus: int = 2,
    memory_mb: int = 2048,
    agent_timeout: float = AGENT_SECONDS,
) -> Iterator[VM]:
    """Boot `image` with this user-data and yield the VM once its guest agent answers
    (cloud-init may still be running: `vm.wait_cloud_init()`). qemu is killed when the
    block ends, however it ends; a run directory is removed unless VM_TEST_KEEP is set.

    guest_ports: ports in the guest reached from the host (`vm.host_port(p)`);
    guest_forwards: GUEST_FORWARD_ADDRESS:guest_port in the guest to 127.0.0.1:host_port.
    accel: 'auto' (hardware KVM if it boots, else TCG), 'tcg' or 'kvm'; default $VM_TEST_ACCEL,
    else 'auto'."""
    run_dir = Path(tempfile.mkdtemp(prefix="vmtest-", dir=_run_root()))
    vm: VM | None = None
    try:
        seed, instance_id = make_seed(run_dir, user_data, hostname, network_config)
        spec = QemuSpec(
            kernel=image.kernel,
            initrd=image.initrd,
            rootfs=image.rootfs,
            seed=seed,
            console_log=run_dir / "console.log",
            agent_socket=run_dir / "qga.sock",
            accel=accel or os.environ.get("VM_TEST_ACCEL") or "auto",
            cpus=cpus,
            memory_mb=memory_mb,
            guest_forwards=tuple(guest_forwards),
        )
        started = start(spec, guest_ports, run_dir)
        vm = VM(started, GuestAgent(run_dir / "qga.sock"), run_dir, instance_id)
        vm.wait_agent(agent_timeout)
        yield vm
    finally:
        if vm is not None:
            vm.stop()
        if os.environ.get("VM_TEST_KEEP"):
            print(f"VM run kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


__all__ = [
    "GUEST_FORWARD_ADDRESS",
    "VM",
    "GuestCommandError",
    "GuestCommandTimeout",
    "GuestForward",
    "GuestResult",
    "VMBootError",
    "boot_vm",
]
