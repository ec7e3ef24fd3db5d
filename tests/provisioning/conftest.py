"""Artifacts built once per session by the real builder from offline sources; the store
tests' databases (SQLite and PostgreSQL, as the control plane's tests have them)."""

from __future__ import annotations

import pytest

from tests.control_plane.conftest import database_url, engine
from tests.provisioning.fixtures import BuiltArtifacts, build_test_artifacts

__all__ = ["artifacts", "database_url", "engine"]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> BuiltArtifacts:
    return build_test_artifacts(tmp_path_factory.mktemp("artifacts"))
