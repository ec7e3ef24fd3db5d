"""Fixtures of the containment tests: a real agent-user pool, made once per test run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containment.pool import TestPool, made_pool


@pytest.fixture(scope="session")
def agent_pool() -> Iterator[TestPool]:
    with made_pool() as pool:
        yield pool
