"""Fixtures of the task-repository tests: the agent-user pool, the GitHub stand-in with its
real bare repositories, and a control plane acting as the App against it."""

from __future__ import annotations

from tests.containment.conftest import agent_pool  # noqa: F401 (fixtures)
from tests.control_plane.conftest import database_url, engine  # noqa: F401 (fixtures)
from tests.github.conftest import app_key, cp_settings, hub  # noqa: F401 (fixtures)
