"""Artifacts built once per session by the real builder from offline sources."""

from __future__ import annotations

import pytest

from tests.provisioning.fixtures import BuiltArtifacts, build_test_artifacts


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> BuiltArtifacts:
    return build_test_artifacts(tmp_path_factory.mktemp("artifacts"))
