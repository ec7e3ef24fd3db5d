"""``python -m cloud_init render``, run as a real process."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloud_init.install import CONTROL_PLANE_CA_FILE
from tests.cloud_init.helpers import (
    BUNDLE_SHA,
    BUNDLE_URL,
    PLANE,
    REPO,
    TOKEN,
    WHEELHOUSE_SHA,
    WHEELHOUSE_URL,
    files_by_path,
    step_scripts,
)

pytestmark = pytest.mark.integration


def base_args(token_file: Path) -> list[str]:
    return [
        "--node-id",
        "node-1",
        "--hostname",
        "vm-node-1",
        "--control-plane-url",
        PLANE,
        "--jwks-url",
        f"{PLANE}/.well-known/jwks.json",
        "--bootstrap-token-file",
        str(token_file),
        "--wheelhouse-url",
        WHEELHOUSE_URL,
        "--wheelhouse-sha256",
        WHEELHOUSE_SHA,
        "--agents",
        "claude,codex",
        "--agents-bundle-url",
        BUNDLE_URL,
        "--agents-bundle-sha256",
        BUNDLE_SHA,
    ]


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud_init", "render", *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_renders_to_stdout_reading_the_token_from_a_file(token_file: Path) -> None:
    result = cli(*base_args(token_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#cloud-config\n")
    files = files_by_path(result.stdout)
    assert files["/etc/vm-agent/bootstrap-token"]["content"] == TOKEN + "\n"
    assert "agents" in step_scripts(result.stdout)
    assert result.stderr == ""


def test_without_the_agent_flags_there_is_no_bundle(token_file: Path) -> None:
    result = cli(*base_args(token_file)[:-6])
    assert result.returncode == 0, result.stderr
    assert "agents" not in step_scripts(result.stdout)


def test_the_agent_flags_go_together(token_file: Path) -> None:
    result = cli(*base_args(token_file)[:-2])
    assert result.returncode == 2
    assert result.stderr.startswith("error: --agents: ")


def test_a_ca_file_is_trusted(token_file: Path) -> None:
    ca = Path(__file__).parent / "test-ca.pem"
    result = cli(*base_args(token_file), "--ca-file", str(ca))
    assert result.returncode == 0, result.stderr
    files = files_by_path(result.stdout)
    assert files[CONTROL_PLANE_CA_FILE]["content"] == ca.read_text()
    assert "ca_certs" not in yaml.safe_load(result.stdout)


def test_writes_a_0600_file_with_output(token_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "user-data"
    result = cli(*base_args(token_file), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text() == cli(*base_args(token_file)).stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token", "user-data"]


def test_swap_flags_and_env(token_file: Path) -> None:
    flags = cli(*base_args(token_file), "--swap-size-mb", "4096", "--swap-swappiness", "5")
    swap = step_scripts(flags.stdout)["swap"]
    assert "\nsize_mb=4096\n" in swap and "\nswappiness=5\n" in swap
    from_env = cli(*base_args(token_file), env={"SWAP_SIZE_MB": "0"})
    assert "swap" not in step_scripts(from_env.stdout)
    both = cli(*base_args(token_file), "--swap-size-mb", "1024", env={"SWAP_SIZE_MB": "0"})
    assert "\nsize_mb=1024\n" in step_scripts(both.stdout)["swap"]


def replace(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--node-id", "node;reboot"),
        ("--hostname", "vm\nruncmd: [reboot]"),
        ("--control-plane-url", "http://cp.example.com"),
        ("--jwks-url", "https://cp.example.com/$(id)"),
        ("--wheelhouse-url", WHEELHOUSE_URL + "`id`"),
        ("--wheelhouse-url", "https://evil.example.com/w.tar"),
        ("--wheelhouse-sha256", "$(id)"),
        ("--agents-bundle-url", "https://evil.example.com/a.tar.gz"),
        ("--agents-bundle-sha256", BUNDLE_SHA + ";"),
        ("--agents", "claude;id"),
        ("--swap-size-mb", "-1"),
        ("--swap-size-mb", "65537"),
        ("--swap-size-mb", "1; rm -rf /"),
        ("--swap-size-mb", "2048\n"),
        ("--swap-swappiness", "101"),
        ("--port", "0"),
        ("--port", "65536"),
        ("--port", "8080'"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_flag(
    token_file: Path, flag: str, value: str
) -> None:
    args = base_args(token_file)
    args = replace(args, flag, value) if flag in args else [*args, f"{flag}={value}"]
    result = cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {flag}: ")
    assert value not in result.stderr


@pytest.mark.parametrize(
    "content", [b"", b"not a token\n", TOKEN.encode() + b"\n\n", b"\xff" + TOKEN.encode()]
)
def test_bad_token_file_contents(token_file: Path, content: bytes) -> None:
    token_file.write_bytes(content)
    result = cli(*base_args(token_file))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --bootstrap-token-file: ")
    assert result.stderr.count("\n") == 1


def test_missing_token_file(tmp_path: Path) -> None:
    result = cli(*base_args(tmp_path / "absent"))
    assert result.returncode == 2
    assert result.stderr == (
        "error: --bootstrap-token-file: cannot read: No such file or directory\n"
    )


def test_bad_swap_env_names_the_variable(token_file: Path) -> None:
    result = cli(*base_args(token_file), env={"SWAP_SWAPPINESS": "60\n"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: SWAP_SWAPPINESS: ")


def test_a_token_on_the_command_line_is_refused(token_file: Path) -> None:
    result = cli(*base_args(token_file), "--bootstrap-token", TOKEN)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "unrecognized arguments" in result.stderr
    assert TOKEN not in result.stderr


def test_a_missing_flag_is_one_line_with_status_2(token_file: Path) -> None:
    result = cli(*base_args(token_file)[2:])
    assert result.returncode == 2
    assert result.stderr == "error: the following arguments are required: --node-id\n"
