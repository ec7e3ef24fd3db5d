"""`vm-agent serve` refuses a bad configuration at start: exit 2, one line naming it."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.capabilities import require_root
from tests.daemon.harness import base_env, vm_agent
from tests.tlsca import make_tls_files
from tests.token_files import write_token

pytestmark = pytest.mark.integration


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = base_env()
    env.update(
        {
            "VM_AGENT_ENV_FILE": str(tmp / "no-env-file"),
            "VM_AGENT_NODE_ID": "node-1",
            # Nothing listens there: every case below must stop before any network call.
            "VM_AGENT_CONTROL_PLANE_URL": "http://127.0.0.1:9",
            "VM_AGENT_JWKS_URL": "http://127.0.0.1:9/.well-known/jwks.json",
            "VM_AGENT_CALLBACK_TOKEN_FILE": str(tmp / "callback-token"),
            "VM_AGENT_STATE_DIR": str(tmp / "state"),
            "VM_AGENT_LISTEN_PORT": "0",
            "VM_AGENT_WORKSPACE_ROOTS": str(tmp),
            "VM_AGENT_AGENTS_AS_ROOT": "1",
        }
    )
    env.update(extra)
    return env


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        vm_agent("serve"), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_bad_port_names_the_variable(tmp_path: Path) -> None:
    done = serve(env_for(tmp_path, VM_AGENT_LISTEN_PORT="99999"))
    assert done.returncode == 2
    assert "VM_AGENT_LISTEN_PORT" in one_line(done.stderr)
    assert not (tmp_path / "state").exists()


def test_bad_value_in_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("VM_AGENT_LOG_FORMAT=xml\n")
    done = serve(env_for(tmp_path, VM_AGENT_ENV_FILE=str(env_file)))
    assert done.returncode == 2
    assert "VM_AGENT_LOG_FORMAT" in one_line(done.stderr)


@pytest.mark.slow  # imports the whole daemon
def test_insecure_token_file_is_refused(tmp_path: Path) -> None:
    write_token(tmp_path / "callback-token", "secret-callback-token-value", mode=0o640)
    done = serve(env_for(tmp_path))
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "VM_AGENT_CALLBACK_TOKEN_FILE" in line
    assert "0640" in line
    assert "secret-callback-token-value" not in done.stderr + done.stdout


@pytest.mark.slow  # imports the whole daemon
def test_missing_token_file_is_refused_outside_dev_mode(tmp_path: Path) -> None:
    done = serve(env_for(tmp_path))
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "VM_AGENT_CALLBACK_TOKEN_FILE" in line
    assert "does not exist" in line


def test_missing_control_plane_outside_dev_mode(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    del env["VM_AGENT_CONTROL_PLANE_URL"]
    done = serve(env)
    assert done.returncode == 2
    assert "VM_AGENT_CONTROL_PLANE_URL" in one_line(done.stderr)


@pytest.mark.slow  # imports the whole daemon
def test_unknown_agents_file(tmp_path: Path) -> None:
    done = serve(env_for(tmp_path, VM_AGENT_AGENTS_FILE=str(tmp_path / "missing.toml")))
    assert done.returncode == 2
    assert "VM_AGENT_AGENTS_FILE" in one_line(done.stderr)


@pytest.mark.slow  # imports the whole daemon
def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    write_token(tmp_path / "callback-token", "a-callback-token-value")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(env_for(tmp_path, VM_AGENT_LISTEN_PORT=str(port)))
    assert done.returncode == 1
    assert "address already in use" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # imports the whole daemon
def test_a_root_daemon_without_its_agent_users_refuses_to_start(tmp_path: Path) -> None:
    require_root("only a root daemon runs agents as pool users")
    write_token(tmp_path / "callback-token", "a-callback-token-value")
    env = env_for(
        tmp_path,
        VM_AGENT_AGENT_USER_PREFIX="vmat-none-u",
        VM_AGENT_AGENT_UID_BASE="63990",
        VM_AGENT_AGENT_HOMES_DIR=str(tmp_path / "homes"),
    )
    del env["VM_AGENT_AGENTS_AS_ROOT"]
    done = serve(env)
    assert done.returncode == 2
    assert "vm-agent agent-users ensure" in one_line(done.stderr)
    assert "create user vmat-none-u0" in done.stderr


def test_plain_ws_on_a_public_interface_is_refused(tmp_path: Path) -> None:
    done = serve(env_for(tmp_path, VM_AGENT_LISTEN_HOST="0.0.0.0"))
    assert done.returncode == 2
    line = one_line(done.stderr)
    for name in ("VM_AGENT_LISTEN_HOST", "VM_AGENT_TLS_CERT_FILE", "VM_AGENT_ALLOW_PLAINTEXT"):
        assert name in line
    assert not (tmp_path / "state").exists()


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    done = serve(env_for(tmp_path, VM_AGENT_TLS_CERT_FILE=str(tmp_path / "node.pem")))
    assert done.returncode == 2
    assert "VM_AGENT_TLS_KEY_FILE" in one_line(done.stderr)


def test_renewing_needs_tls_and_a_control_plane(tmp_path: Path) -> None:
    done = serve(env_for(tmp_path, VM_AGENT_TLS_RENEW="1"))
    assert done.returncode == 2
    line = one_line(done.stderr)
    for name in ("VM_AGENT_TLS_RENEW", "VM_AGENT_TLS_CERT_FILE", "VM_AGENT_CONTROL_PLANE_URL"):
        assert name in line


@pytest.mark.slow  # imports the whole daemon
def test_a_tls_key_others_can_read_is_refused(tmp_path: Path) -> None:
    write_token(tmp_path / "callback-token", "a-callback-token-value")
    files = make_tls_files(tmp_path / "tls")
    files.key_file.chmod(0o644)
    env = env_for(
        tmp_path,
        VM_AGENT_LISTEN_HOST="0.0.0.0",
        VM_AGENT_TLS_CERT_FILE=str(files.cert_file),
        VM_AGENT_TLS_KEY_FILE=str(files.key_file),
    )
    done = serve(env)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith("vm-agent: VM_AGENT_TLS_KEY_FILE: ")
    assert "0644" in line
    assert "BEGIN" not in done.stderr  # nothing of the key itself


@pytest.mark.slow  # imports the whole daemon
def test_an_unusable_control_plane_ca_file(tmp_path: Path) -> None:
    write_token(tmp_path / "callback-token", "secret-callback-token-value")
    missing = tmp_path / "no-ca.pem"
    done = serve(env_for(tmp_path, VM_AGENT_CONTROL_PLANE_CA_FILE=str(missing)))
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        f"vm-agent: VM_AGENT_CONTROL_PLANE_CA_FILE: {missing} does not exist"
    )
