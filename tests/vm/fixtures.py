"""pytest fixtures and hooks for VM tests (tests/vm/conftest.py imports them).

- `vm_image` (session): the cached image, built on first use. Without the host tools the
  test skips with the reason, or fails under CI (`CI` set).
- `vm_launcher` (session): `vm_launcher.boot(user_data, ...)` is `boot_vm` for this image,
  and a VM booted through it has its console attached to any test that fails while it runs
  and its timings printed in the session's summary. A test marked `vm` gets a 30-minute
  timeout unless it sets its own. Boot once per module:

      @pytest.fixture(scope="module")
      def vm(vm_launcher):
          with vm_launcher.boot(user_data, guest_ports=[8080], label="mine") as vm:
              vm.wait_cloud_init()
              yield vm
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from control_plane.providers.qemu.command import GuestForward
from tests import capabilities
from tests.vm.image import VMImage, describe, ensure_image, missing_tools
from tests.vm.machine import VM, boot_vm

_live: list[VM] = []
# reports of VMs whose `with` block a failure ended, for the failing test's report
_ended_by_failure: list[tuple[str, str]] = []
_summary: list[str] = []


def require_vm_host() -> None:
    missing = missing_tools()
    if missing:
        capabilities.missing("VM tests need " + ", ".join(missing) + "; .ci/run installs them")


class VMLauncher:
    def __init__(self, image: VMImage) -> None:
        self.image = image

    @contextmanager
    def boot(
        self,
        user_data: str,
        *,
        label: str,
        guest_ports: Sequence[int] = (),
        guest_forwards: Sequence[GuestForward] = (),
        **options: Any,
    ) -> Iterator[VM]:
        """`boot_vm` (same options), with the VM's console and timings reported."""
        with (
            boot_vm(
                self.image,
                user_data,
                guest_ports=guest_ports,
                guest_forwards=guest_forwards,
                **options,
            ) as vm,
            self.reported(vm, label=label),
        ):
            yield vm

    @contextmanager
    def reported(self, vm: VM, *, label: str) -> Iterator[VM]:
        """`vm` (this harness's or one the control plane's driver made: tests/vm/adopted.py)
        with its console attached to a failure meanwhile and its timings in the summary."""
        _live.append(vm)
        try:
            yield vm
        except BaseException:
            _ended_by_failure.append((vm.instance_id, vm.failure_report()))
            raise
        finally:
            _live.remove(vm)
            _summary.append(f"VM {label!r} ({vm.accel}, instance-id {vm.instance_id}):")
            _summary.extend(f"  {line}" for line in vm.timeline.report() + vm.notes)


@pytest.fixture(scope="session")
def vm_image() -> VMImage:
    require_vm_host()
    obtained = ensure_image()
    _summary.append(describe(obtained))
    return obtained.image


@pytest.fixture(scope="session")
def vm_launcher(vm_image: VMImage) -> VMLauncher:
    return VMLauncher(vm_image)


# pytest-timeout's budget covers fixture setup, where a boot (minutes under TCG) happens
VM_TEST_TIMEOUT = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A `vm` test without its own timeout gets VM_TEST_TIMEOUT, not the suite's 120 s."""
    for item in items:
        if item.get_closest_marker("vm") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(VM_TEST_TIMEOUT))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        for vm in _live:
            report.sections.append((f"VM {vm.instance_id}", vm.failure_report()))
        for instance_id, text in _ended_by_failure:
            report.sections.append((f"VM {instance_id}", text))
    if report.when == "teardown":
        _ended_by_failure.clear()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _summary:
        terminalreporter.section("VM runs")
        for line in _summary:
            terminalreporter.write_line(line)
