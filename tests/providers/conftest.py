"""The control plane's database fixtures (SQLite and PostgreSQL) for the provider tests."""

from tests.control_plane.conftest import database_url, engine, settings

__all__ = ["database_url", "engine", "settings"]
