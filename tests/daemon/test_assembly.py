"""The daemon's assembly helpers, without processes: settings into session config, and
which callback token situations start, skip the control plane, or refuse."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from tests.tlsca import make_tls_files
from tests.token_files import write_token
from vm_agent.common.redact import Redactor
from vm_agent.daemon.assembly import StartupError, load_callback_tokens, load_tls, session_config
from vm_agent.daemon.run import DaemonReady
from vm_agent.runtime.settings import Settings, SettingsError, load_settings


def settings(tmp: Path, **extra: str) -> Settings:
    env = {
        "VM_AGENT_ENV_FILE": str(tmp / "none"),
        "VM_AGENT_CONTROL_PLANE_URL": "http://127.0.0.1:9",
        "VM_AGENT_JWKS_URL": "http://127.0.0.1:9/jwks",
        "VM_AGENT_CALLBACK_TOKEN_FILE": str(tmp / "token"),
        **extra,
    }
    return load_settings(env)


def test_session_config_takes_the_settings(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        VM_AGENT_PROMPT_TIMEOUT_S="12.5",
        VM_AGENT_NO_OUTPUT_TIMEOUT_S="7",
        VM_AGENT_CANCEL_GRACE_S="2",
        VM_AGENT_RESTART_BUDGET="5",
        VM_AGENT_RESTART_WINDOW_S="60",
        VM_AGENT_MAX_LINE_BYTES="65536",
        VM_AGENT_START_TIMEOUT_S="9",
    )
    config = session_config(s, {"PATH": "/usr/bin", "VM_AGENT_SECRET": "x"})
    assert config.start_timeout_s == 9.0
    assert session_config(settings(tmp_path), {}).start_timeout_s == 60.0  # the default
    policy = config.policy
    assert (policy.prompt_timeout_s, policy.no_output_timeout_s) == (12.5, 7.0)
    assert (policy.cancel_grace_s, policy.restart_budget, policy.restart_window_s) == (2, 5, 60)
    assert config.max_line_bytes == 65536
    assert config.daemon_env["PATH"] == "/usr/bin"


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_a_bad_start_timeout_names_the_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="VM_AGENT_START_TIMEOUT_S"):
        settings(tmp_path, VM_AGENT_START_TIMEOUT_S=value)


def test_token_loaded_and_known_to_the_redactor(tmp_path: Path) -> None:
    write_token(tmp_path / "token", "callback-token-value-123")
    redactor = Redactor()
    store = load_callback_tokens(settings(tmp_path), redactor)
    assert store is not None and store.value == "callback-token-value-123"
    assert "callback-token-value-123" not in redactor.redact("token callback-token-value-123")


def test_missing_token_refused_in_production_skipped_in_dev(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="VM_AGENT_CALLBACK_TOKEN_FILE"):
        load_callback_tokens(settings(tmp_path), Redactor())
    dev = settings(tmp_path, VM_AGENT_DEV_MODE="1")
    assert load_callback_tokens(dev, Redactor()) is None


def test_insecure_token_refused_even_in_dev(tmp_path: Path) -> None:
    write_token(tmp_path / "token", "callback-token-value-123", mode=0o604)
    dev = settings(tmp_path, VM_AGENT_DEV_MODE="1")
    with pytest.raises(StartupError, match="0604"):
        load_callback_tokens(dev, Redactor())


def test_no_control_plane_means_no_token(tmp_path: Path) -> None:
    dev = load_settings({"VM_AGENT_ENV_FILE": str(tmp_path / "none"), "VM_AGENT_DEV_MODE": "1"})
    assert load_callback_tokens(dev, Redactor()) is None


def test_viewer_url_brackets_ipv6() -> None:
    assert DaemonReady("::1", 8080, "n", 0).viewer_url == "ws://[::1]:8080/v1/ws"
    assert DaemonReady("127.0.0.1", 80, "n", 0).viewer_url == "ws://127.0.0.1:80/v1/ws"


def test_plain_ws_on_a_public_address_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exposed = Settings(
        dev_mode=True,
        state_dir=tmp_path,
        listen_host="0.0.0.0",
        allow_plaintext=True,
    )
    with caplog.at_level(logging.WARNING, logger="vm_agent.daemon.run"):
        assert load_tls(exposed) is None
    assert "VM_AGENT_ALLOW_PLAINTEXT" in caplog.text and "in clear" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vm_agent.daemon.run"):
        assert load_tls(Settings(dev_mode=True, state_dir=tmp_path)) is None
    assert caplog.text == ""


def test_tls_files_give_a_context_and_a_wss_url(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    with_tls = Settings(
        dev_mode=True,
        state_dir=tmp_path,
        tls_cert_file=files.cert_file,
        tls_key_file=files.key_file,
    )
    ctx = load_tls(with_tls)
    assert ctx is not None and ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert DaemonReady("127.0.0.1", 1, "n", 0, tls=True).viewer_url == "wss://127.0.0.1:1/v1/ws"
    files.key_file.chmod(0o640)
    with pytest.raises(StartupError, match="VM_AGENT_TLS_KEY_FILE"):
        load_tls(with_tls)
