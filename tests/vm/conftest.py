"""VM tests: the harness's fixtures and report hooks (tests/vm/fixtures.py), and the
product tests' control plane and figures (tests/vm/host_fixtures.py)."""

from typing import Any

from tests.vm.fixtures import (  # noqa: F401
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
    vm_image,
    vm_launcher,
)
from tests.vm.fixtures import pytest_terminal_summary as harness_summary
from tests.vm.host_fixtures import (  # noqa: F401
    figures_summary,
    vm_artifacts,
    vm_figures,
    vm_github,
    vm_plane,
    vm_portal,
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    harness_summary(terminalreporter)
    figures_summary(terminalreporter)
