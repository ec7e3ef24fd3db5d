"""Fixtures for control plane tests: every test that touches the database runs twice, on
SQLite and on PostgreSQL (a fresh schema of the tests' server; see tests/postgres.py). The
PostgreSQL run is marked ``slow``: `make test` runs each once (on SQLite), `make test-slow`
again on PostgreSQL, so the quick stage stays within its budget as the suite grows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import make_engine
from control_plane.storage.migrate import upgrade
from tests.postgres import fresh_schema, postgres_url

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'control-plane.db'}"
        return
    with fresh_schema(postgres_url()) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database."""
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        state_dir=tmp_path / "cp-state",
        public_url="http://127.0.0.1:1",
        database_url=database_url,
        callback_token_ttl_s=600,
        viewer_token_ttl_s=300,
        user_token_ttl_s=300,
        key_activation_delay_s=0,
    )
