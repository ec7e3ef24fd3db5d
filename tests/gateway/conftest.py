"""The gateway's tests through the control plane (`--task`) run on SQLite and PostgreSQL."""

from tests.control_plane.conftest import database_url

__all__ = ["database_url"]
