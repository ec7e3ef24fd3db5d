"""The harness on a real boot: cloud-init runs a user-data made here, systemd comes up,
both kinds of forward carry HTTP, a unit restarts, guest commands behave. One boot for
the module. (The product's own user-data is tested elsewhere on this harness.)"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from control_plane.providers.qemu.command import GuestForward
from tests.vm import timeline as tl
from tests.vm.fixtures import VMLauncher
from tests.vm.machine import VM, GuestCommandTimeout, GuestResult
from tests.vm.qga import GuestAgentError

pytestmark = pytest.mark.vm

GUEST_HTTP_PORT = 8080
GUEST_FORWARD_PORT = 8700
UNIT = "smoke-http.service"


@dataclass
class HostServer:
    """An HTTP server on the host's loopback that records who asked."""

    token: str
    port: int = 0
    clients: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def host_server() -> Iterator[HostServer]:
    state = HostServer(token=secrets.token_hex(16))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.clients.append(self.client_address[0])
            body = state.token.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Smoke:
    vm: VM
    cloud_init: GuestResult
    ran_token: str
    served_token: str


def smoke_user_data(ran_token: str, served_token: str) -> str:
    unit = (
        "[Unit]\nDescription=HTTP server of the VM harness's smoke test\n\n"
        "[Service]\n"
        f"ExecStart=/usr/bin/python3 -m http.server {GUEST_HTTP_PORT} --directory /srv/smoke\n"
    )
    config = {
        "write_files": [
            {"path": f"/etc/systemd/system/{UNIT}", "content": unit},
            {"path": "/srv/smoke/index.txt", "content": served_token},
        ],
        "runcmd": [
            ["sh", "-c", f"mkdir -p /var/lib/smoke && echo {ran_token} > /var/lib/smoke/ran"],
            ["systemctl", "daemon-reload"],
            ["systemctl", "start", UNIT],
        ],
    }
    return "#cloud-config\n" + yaml.safe_dump(config)


@pytest.fixture(scope="module")
def smoke(vm_launcher: VMLauncher, host_server: HostServer) -> Iterator[Smoke]:
    ran, served = secrets.token_hex(8), secrets.token_hex(8)
    with vm_launcher.boot(
        smoke_user_data(ran, served),
        label="smoke",
        guest_ports=[GUEST_HTTP_PORT],
        guest_forwards=[GuestForward(GUEST_FORWARD_PORT, host_server.port)],
    ) as vm:
        yield Smoke(vm, vm.wait_cloud_init(), ran, served)


def get_until_served(url: str, seconds: float = 120.0) -> httpx.Response:
    """GET url, retrying while nothing answers yet (the guest is slow to start things)."""
    deadline = time.monotonic() + seconds
    with httpx.Client(trust_env=False, timeout=10) as client:
        while True:
            try:
                return client.get(url)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def test_cloud_init_ran_the_user_data(smoke: Smoke) -> None:
    assert smoke.cloud_init.exit_code == 0, smoke.cloud_init.describe()
    assert "status: done" in smoke.cloud_init.stdout
    assert smoke.vm.read_text("/var/lib/smoke/ran").strip() == smoke.ran_token
    marks = smoke.vm.timeline.marks
    for milestone in (tl.FIRST_CONSOLE, tl.KERNEL, tl.SYSTEMD, tl.CLOUD_INIT_START):
        assert milestone in marks, f"{milestone} not seen on the console"
    assert marks[tl.AGENT_UP] <= marks[tl.CLOUD_INIT_DONE]


def test_systemd_reports_the_system_running(smoke: Smoke) -> None:
    state = smoke.vm.run(["systemctl", "is-system-running", "--wait"], timeout=600)
    smoke.vm.note(f"systemctl is-system-running: {state.stdout.strip()}")
    failed = smoke.vm.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout
    assert state.stdout.strip() == "running", f"failed units:\n{failed}"


def test_host_reaches_a_guest_server_through_hostfwd(smoke: Smoke) -> None:
    port = smoke.vm.host_port(GUEST_HTTP_PORT)
    response = get_until_served(f"http://127.0.0.1:{port}/index.txt")
    assert response.status_code == 200
    assert response.text == smoke.served_token


def test_guest_reaches_a_host_loopback_server_through_guestfwd(
    smoke: Smoke, host_server: HostServer
) -> None:
    url = f"http://{smoke.vm.guest_forward_address}:{GUEST_FORWARD_PORT}/token"
    fetched = smoke.vm.run(["curl", "-fsS", "--max-time", "60", url], check=True)
    assert fetched.stdout == host_server.token
    assert host_server.clients and set(host_server.clients) == {"127.0.0.1"}


def test_guest_reaches_nothing_but_its_forwards(smoke: Smoke, host_server: HostServer) -> None:
    # without restrict=on the gateway address would carry this to the host's loopback
    asked = len(host_server.clients)
    url = f"http://10.0.2.2:{host_server.port}/token"
    direct = smoke.vm.run(["curl", "-sS", "--max-time", "10", url])
    assert direct.exit_code != 0, direct.describe()
    assert len(host_server.clients) == asked


def test_a_unit_restarts_and_serves_again(smoke: Smoke) -> None:
    vm = smoke.vm

    def main_pid() -> str:
        return vm.run(["systemctl", "show", "-P", "MainPID", UNIT], check=True).stdout.strip()

    before = main_pid()
    vm.run(["systemctl", "restart", UNIT], check=True)
    assert vm.wait_for(["systemctl", "is-active", UNIT], timeout=60).stdout.strip() == "active"
    after = main_pid()
    assert after not in (before, "0")
    port = vm.host_port(GUEST_HTTP_PORT)
    assert get_until_served(f"http://127.0.0.1:{port}/index.txt").text == smoke.served_token


def test_guest_commands_give_streams_codes_users_and_time_limits(smoke: Smoke) -> None:
    vm = smoke.vm
    mixed = vm.sh("echo out; echo err >&2; exit 3")
    assert (mixed.exit_code, mixed.stdout, mixed.stderr) == (3, "out\n", "err\n")
    assert vm.run(["cat"], stdin=b"piped in").stdout == "piped in"
    assert vm.run_as("nobody", ["id", "-un"], check=True).stdout.strip() == "nobody"
    began = time.monotonic()
    with pytest.raises(GuestCommandTimeout):
        vm.run(["sleep", "600"], timeout=2)
    assert time.monotonic() - began < 120
    assert vm.run(["pgrep", "-x", "sleep"]).exit_code == 1, "the timed-out command lives on"
    with pytest.raises(GuestAgentError):
        vm.read_file("/nonexistent")
    vm.write_file("/tmp/written", b"from the host")
    assert vm.read_file("/tmp/written") == b"from the host"
