"""Fixtures for control plane tests: settings over a temporary state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.settings import ControlPlaneSettings


@pytest.fixture
def settings(tmp_path: Path) -> ControlPlaneSettings:
    return ControlPlaneSettings(
        state_dir=tmp_path / "cp-state",
        public_url="http://127.0.0.1:1",
        callback_token_ttl_s=600,
        viewer_token_ttl_s=300,
        user_token_ttl_s=300,
        key_activation_delay_s=0,
    )
