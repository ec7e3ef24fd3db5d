"""`vm-agent serve` with TLS files, and `vm-agent attach` over wss:// with --ca-file."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import anyio
import pytest

from tests.daemon.harness import (
    base_env,
    control_plane,
    notify_socket,
    serving,
    sigterm_and_wait,
    stopped_at_exit,
    vm_agent,
    write_agents_file,
)
from tests.tlsca import make_tls_files
from tests.token_files import write_token

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


async def _attach(*args: str) -> tuple[int, str, str]:
    done = await anyio.run_process(vm_agent("attach", *args), env=base_env(), check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_attach_over_wss_verifies_the_daemon(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    agents = write_agents_file(tmp_path, "fake", "--scenario", "echo")
    files = make_tls_files(tmp_path / "tls")
    with tempfile.TemporaryDirectory(prefix="vmad-") as short:
        async with (
            control_plane(tmp_path / "cp") as plane,
            notify_socket(Path(short) / "notify") as notify,
        ):
            write_token(tmp_path / "callback-token", plane.callback_token())
            daemon, url = await serving(
                tmp_path,
                plane,
                notify,
                agents,
                VM_AGENT_TLS_CERT_FILE=str(files.cert_file),
                VM_AGENT_TLS_KEY_FILE=str(files.key_file),
            )
            async with stopped_at_exit(daemon):
                assert url.startswith("wss://")
                token = plane.viewer_token()
                start = ("--start", "fake", "--cwd", str(work), "--prompt", "hi", "--json")
                with anyio.fail_after(120):
                    code, out, err = await _attach(
                        "--url", url, "--token", token, "--ca-file", str(files.ca_file), *start
                    )
                    assert code == 0, err
                    assert json.loads(out.splitlines()[-1])["outcome"] == "completed"
                    # The system's CAs do not know this one: no connection, and a clear reason.
                    code, _, err = await _attach("--url", url, "--token", token, *start)
                    assert code == 1
                    assert "cannot connect" in err and "certificate verify failed" in err
                    # A bad token is refused at the upgrade (HTTP 401), not after.
                    code, _, err = await _attach(
                        "--url", url, "--token", "x.y.z", "--ca-file", str(files.ca_file), *start
                    )
                    assert code == 1
                    assert "unauthorized (HTTP 401)" in err
                    # --ca-file with a ws:// URL is a usage error.
                    code, _, err = await _attach(
                        "--url", url.replace("wss", "ws"), "--token", token,
                        "--ca-file", str(files.ca_file),
                    )  # fmt: skip
                    assert code == 2 and "--ca-file goes with a wss:// URL" in err
                assert await sigterm_and_wait(daemon) == 0
        log_text = (tmp_path / "daemon.log").read_text()
        assert "listening on wss://" in log_text
        assert token not in log_text
