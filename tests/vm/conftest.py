"""VM tests: the fixtures and report hooks of tests/vm/fixtures.py."""

from tests.vm.fixtures import (  # noqa: F401
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
    pytest_terminal_summary,
    vm_image,
    vm_launcher,
)
