"""The host side of the product's VM tests, on loopback (no VM): the figures' parsers, the
switchable relay, and the control plane as a guest would reach it (HTTPS, its CA, the
artifacts watch that a test uses to take the control plane away after the install)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from cryptography import x509

from tests.provisioning.fixtures import build_test_artifacts
from tests.vm.booted import seconds_of
from tests.vm.figures import FigureBook, StepTiming, parse_exposure, parse_timings
from tests.vm.plane_host import PUBLIC_URL, HostPlane, host_plane, plane_tls
from tests.vm.relay import relay_to


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("swap 1108\nvm-agent 74700\n", [StepTiming("swap", 1.108), StepTiming("vm-agent", 74.7)]),
        ("vm-agent failed\n", [StepTiming("vm-agent", None)]),
        ("bootstrap-token 335\n\n# noise\nstart 6754", [
            StepTiming("bootstrap-token", 0.335), StepTiming("start", 6.754)
        ]),
    ],
)  # fmt: skip
def test_timings(text: str, expected: list[StepTiming]) -> None:
    assert parse_timings(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("→ Overall exposure level for vm-agent.service: 7.7 EXPOSED :-(", (7.7, "EXPOSED")),
        ("x\n→ Overall exposure level for a.service: 4.2 OK :-)\n", (4.2, "OK")),
        ("no such unit", None),
    ],
)
def test_exposure(text: str, expected: tuple[float, str] | None) -> None:
    assert parse_exposure(text) == expected


def test_figures_are_written(tmp_path: Path) -> None:
    book = FigureBook()
    book.add("node", "qemu start to ready", 410.94, "s")
    book.add("node", "exposure", "7.7 EXPOSED")
    book.write(tmp_path)
    assert "| node | qemu start to ready | 410.9 s |" in (tmp_path / "figures.md").read_text()
    assert '"value": 410.94' in (tmp_path / "figures.json").read_text()
    assert book.lines() == ["node: qemu start to ready: 410.9 s", "node: exposure: 7.7 EXPOSED"]


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    thread.join(timeout=5)


def test_the_relay_carries_then_turns_away(echo_port: int) -> None:
    with relay_to(echo_port) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as held:
            held.sendall(b"one")
            assert held.recv(16) == b"one"
            relay.down()
            with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as refused:
                assert refused.recv(16) == b""  # closed at once
            held.sendall(b"two")  # a connection made while up carries on
            assert held.recv(16) == b"two"
        relay.up()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as again:
            again.sendall(b"three")
            assert again.recv(16) == b"three"
    assert relay.log.relayed == 2
    assert len(relay.log.refused_at) == 1


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[HostPlane]:
    artifacts = build_test_artifacts(tmp_path / "built")
    with (
        start_blocking_portal() as portal,
        host_plane(portal, tmp_path / "cp", artifacts.directory, plane_tls(tmp_path / "tls")) as p,
    ):
        yield p


@pytest.mark.integration
def test_the_plane_as_a_guest_reaches_it(plane: HostPlane) -> None:
    created = plane.create_node(node_id="vmt-loop")
    assert f"{PUBLIC_URL}/artifacts/" in created.user_data
    assert plane.settings.tls_cert_file is not None
    cert = x509.load_pem_x509_certificate(plane.settings.tls_cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.2.100" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert len(created.bootstrap_token) > 20
    assert plane.node("vmt-loop")["ready_at"] is None

    forward, relay = plane.forward()
    assert forward.host_port == relay.port
    seen: list[str] = []
    plane.watch.on_served.append(seen.append)
    with httpx.Client(verify=plane.tls.client_context(), trust_env=False) as client:
        url = f"https://127.0.0.1:{relay.port}"
        wheelhouse = plane.http.get("/artifacts/manifest.json").json()["wheelhouse"]["file"]
        assert client.get(f"{url}/artifacts/{wheelhouse}").status_code == 200
        assert client.get(f"{url}/artifacts/not-there").status_code == 404
        assert seen == ["manifest.json", wheelhouse]
        relay.down()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", verify=plane.tls.client_context(), trust_env=False)
    ssl.create_default_context(cadata=plane.node_ca_pem())  # a CA a viewer can load


@pytest.mark.parametrize(
    ("span", "seconds"),
    [("5s", 5.0), ("1min", 60.0), ("1min 30s", 90.0), ("100ms", 0.1), ("2h", 7200.0)],
)
def test_systemd_time_spans(span: str, seconds: float) -> None:
    assert seconds_of(span) == pytest.approx(seconds)


@pytest.mark.parametrize("span", ["", "infinity", "5", "5 parsecs"])
def test_what_is_not_a_time_span(span: str) -> None:
    with pytest.raises(ValueError, match="time span"):
        seconds_of(span)
