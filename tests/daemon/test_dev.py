"""`vm-agent dev` end to end (a subprocess), `vm-agent attach` against it, and its files."""

from __future__ import annotations

import json
import re
import signal
import socket
import stat
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.streams.text import TextReceiveStream

from tests.daemon.harness import base_env, vm_agent
from tests.processes import child_process, stopped_by
from vm_agent.cli.dev import dev_settings
from vm_agent.cli.dev_agents import dev_agents, write_agents_file
from vm_agent.process.catalog import Catalog
from vm_agent.runtime.settings import SettingsError


def test_dev_agents_file_loads_as_a_catalog(tmp_path: Path) -> None:
    odd = tmp_path / 'a "quoted" dir'
    odd.mkdir()
    path = tmp_path / "agents.toml"
    write_agents_file(path, dev_agents(odd))
    catalog = Catalog.load(path)
    assert {"fake", "fake-slow", "fake-tools", "fake-crash"} <= set(catalog.names())
    command = catalog.get("fake-crash").command
    assert command[command.index("--state-dir") + 1] == str(odd / "fake-agent")


@pytest.mark.parametrize(
    ("env_port", "flag_port", "expected"),
    [
        (None, None, 8080),  # neither: the default
        ("9000", None, 9000),  # the variable, as for `vm-agent serve`
        ("9000", 9100, 9100),  # an explicit --port wins
        (None, 0, 0),  # --port 0: any free port
        ("9000", 0, 0),
    ],
)
def test_dev_port_from_the_variable_unless_given(
    tmp_path: Path, env_port: str | None, flag_port: int | None, expected: int
) -> None:
    environ = {} if env_port is None else {"VM_AGENT_LISTEN_PORT": env_port}
    url = "http://127.0.0.1:1"
    settings = dev_settings(tmp_path, url, f"{url}/jwks", flag_port, environ)
    assert settings.listen_port == expected
    assert settings.listen_host == "127.0.0.1"


def test_dev_with_a_bad_port_variable_names_it(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1"
    with pytest.raises(SettingsError, match="VM_AGENT_LISTEN_PORT"):
        dev_settings(tmp_path, url, f"{url}/jwks", None, {"VM_AGENT_LISTEN_PORT": "port"})


async def _read_until(stream: TextReceiveStream, pattern: str, seen: list[str]) -> re.Match[str]:
    with anyio.fail_after(90):
        while not (found := re.search(pattern, "".join(seen))):
            seen.append(await stream.receive())
    return found


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.anyio
async def test_dev_prints_url_and_token_attach_prompts_ctrl_c_stops(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    dev_dir = tmp_path / "dev"
    argv = vm_agent("dev", "--dev-dir", str(dev_dir), "--port", "0", "--control-plane-port", "0")
    # As root, dev runs agents as pool users, who cannot run this checkout's interpreter
    # here (tests/containment/test_dev_pool.py covers that path): agents as root.
    dev_env = {
        **base_env(),
        "VM_AGENT_WORKSPACE_ROOTS": str(tmp_path),
        "VM_AGENT_AGENTS_AS_ROOT": "1",
    }
    with (tmp_path / "dev.log").open("wb") as log:
        process = await anyio.open_process(argv, env=dev_env, stderr=log)
    try:
        assert process.stdout is not None
        out: list[str] = []
        stream = TextReceiveStream(process.stdout)
        url = (await _read_until(stream, r"viewer url: +(ws://127\.0\.0\.1:\d+/v1/ws)\n", out))[1]
        token = (await _read_until(stream, r"viewer token: +(\S+)\n", out))[1]
        await _read_until(stream, r" attach --url .*--prompt hello\n", out)
        assert stat.S_IMODE((dev_dir / "callback-token").stat().st_mode) == 0o600
        assert token not in (tmp_path / "dev.log").read_text()

        attach = vm_agent(
            "attach", "--url", url, "--start", "fake", "--cwd", str(work),
            "--prompt", "hello", "--json",
        )  # fmt: skip
        env = {**base_env(), "VM_AGENT_TOKEN": token}  # the token from the environment
        done = await anyio.run_process(attach, env=env, check=False)
        assert done.returncode == 0, done.stderr.decode()
        lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
        events, outcome = lines[:-1], lines[-1]
        assert outcome["outcome"] == "completed"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert any(e["type"] == "prompt.finished" for e in events)
        text = "".join(
            e["data"]["update"]["content"].get("text", "")
            for e in events
            if e["type"] == "acp.update"
            and e["data"]["update"].get("sessionUpdate") == "agent_message_chunk"
        )
        assert "hello" in text

        refused = await anyio.run_process(
            [*attach[:-1]], env={**base_env(), "VM_AGENT_TOKEN": "not-a-jwt"}, check=False
        )
        assert refused.returncode == 1
        assert b"unauthorized" in refused.stderr

        process.send_signal(signal.SIGINT)
        with anyio.fail_after(60):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.anyio
async def test_dev_listens_on_the_port_the_variable_names(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a free port (released just before the daemon binds it)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = vm_agent("dev", "--dev-dir", str(tmp_path / "dev"), "--control-plane-port", "0")
    env = {**base_env(), "VM_AGENT_LISTEN_PORT": str(port)}
    with (tmp_path / "dev.log").open("wb") as log:
        async with child_process(argv, env=env, stderr=log) as process:
            assert process.stdout is not None
            out: list[str] = []
            stream = TextReceiveStream(process.stdout)
            url = (await _read_until(stream, r"viewer url: +(ws://\S+)\n", out))[1]
            assert url == f"ws://127.0.0.1:{port}/v1/ws"
            async with httpx.AsyncClient() as client:
                health = await client.get(f"http://127.0.0.1:{port}/health")
            assert health.status_code == 200
            assert await stopped_by(process, signal.SIGINT) == 0


@pytest.mark.integration
def test_attach_without_token_is_a_usage_error() -> None:
    env = base_env()
    done = subprocess.run(
        vm_agent("attach", "--url", "ws://127.0.0.1:9/v1/ws"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "VM_AGENT_TOKEN" in done.stderr


@pytest.mark.integration
def test_attach_that_never_connects_fails_at_once(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, not listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        done = subprocess.run(
            vm_agent("attach", "--url", f"ws://127.0.0.1:{port}/v1/ws", "--token", "t"),
            env=base_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "cannot connect" in done.stderr
