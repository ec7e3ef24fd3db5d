"""Where the control plane reaches a node: a recorded address or the provisioned name,
the TLS name always the node CA's name for the node; plain ws:// only on loopback."""

from __future__ import annotations

import pytest

from control_plane.dispatch.addresses import Address, check_viewer_url, resolve

D = "nodes.example.test"


@pytest.mark.parametrize(
    ("recorded", "provisioned", "address"),
    [
        (None, None, None),
        (
            None,
            ("n1.nodes.example.test", 8443),
            Address("wss://n1.nodes.example.test:8443/v1/ws", "/srv/workspaces", "n1." + D),
        ),
        (
            ("wss://n1.else.test:8080/v1/ws", "/data/ws"),
            ("n1.nodes.example.test", 8443),
            Address("wss://n1.else.test:8080/v1/ws", "/data/ws", "n1." + D),  # recorded wins
        ),
        (
            ("ws://127.0.0.1:8080/v1/ws", "/tmp/ws"),
            None,
            Address("ws://127.0.0.1:8080/v1/ws", "/tmp/ws", None),
        ),
    ],
)
def test_resolve(
    recorded: tuple[str, str] | None, provisioned: tuple[str, int] | None, address: Address | None
) -> None:
    assert resolve("n1", D, recorded, provisioned) == address


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("wss://node.example.test:8080/v1/ws", None),
        ("ws://127.0.0.1:8080/v1/ws", None),
        ("ws://[::1]:8080/v1/ws", None),
        ("ws://localhost:8080/v1/ws", None),
        ("ws://0.0.0.0:8080/v1/ws", "plain ws:// only for a node on loopback"),
        ("ws://node.example.test/v1/ws", "plain ws:// only for a node on loopback"),
        ("https://node.example.test/v1/ws", "must be ws:// or wss://"),
        ("wss://node.example.test/other", "must end in /v1/ws"),
        ("wss://node.example.test/v1/ws?x=1", "must end in /v1/ws"),
        ("wss:///v1/ws", "must be ws:// or wss://"),
    ],
)
def test_check_viewer_url(url: str, why: str | None) -> None:
    got = check_viewer_url(url)
    assert (got is None) if why is None else (got is not None and why in got)
