"""Settings come from CONTROL_PLANE_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.settings import ControlPlaneSettings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONTROL_PLANE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CONTROL_PLANE_PUBLIC_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("CONTROL_PLANE_HEARTBEAT_INTERVAL_S", "7")
    monkeypatch.setenv("CONTROL_PLANE_SECRETS_FILE", str(tmp_path / "s.json"))
    s = ControlPlaneSettings()  # type: ignore[call-arg]
    assert s.public_url == "http://127.0.0.1:9"
    assert s.heartbeat_interval_s == 7
    assert s.secrets_file == tmp_path / "s.json"
    # Fault injection is a test-only wrapper of the app (tests/faults.py), not a setting.
    assert not [name for name in ControlPlaneSettings.model_fields if name.startswith("fault")]


def test_agent_secrets_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from control_plane.identity.secrets import FileSecretStore

    monkeypatch.setenv(
        "CONTROL_PLANE_AGENT_SECRETS",
        '{"codex": {"OPENAI_API_KEY": "sk-env"}, "claude": {"ANTHROPIC_API_KEY": "sk-env"}}',
    )
    s = ControlPlaneSettings(state_dir=tmp_path, public_url="http://x")
    assert "sk-env" not in repr(s)
    file = tmp_path / "secrets.json"
    file.write_text('{"claude": {"ANTHROPIC_API_KEY": "sk-file"}}')
    file.chmod(0o600)  # the store refuses a file others may read
    store = FileSecretStore(file, s.agent_secrets)
    assert store.env_for("claude") == {"ANTHROPIC_API_KEY": "sk-file"}
    assert store.env_for("codex") == {"OPENAI_API_KEY": "sk-env"}
    assert store.env_for("fake") == {}
    assert FileSecretStore(None, s.agent_secrets).env_for("claude") == {
        "ANTHROPIC_API_KEY": "sk-env"
    }
