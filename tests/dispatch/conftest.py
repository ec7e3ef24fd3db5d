"""The control plane tests' fixtures: each database test runs on SQLite and PostgreSQL."""

from tests.control_plane.conftest import database_url, engine, settings

__all__ = ["database_url", "engine", "settings"]
