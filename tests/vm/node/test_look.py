"""People look and step in on the real node, through its TLS port: a terminal in a session's
workspace (a real shell as the session's agent user), and the dev server that shell starts
reached through the daemon's authenticated forward."""

from __future__ import annotations

import base64
import re
from typing import Any

import anyio
import pytest

from tests.daemon.harness import Viewer
from tests.vm.booted import BootedNode
from tests.vm.node import viewing

pytestmark = pytest.mark.vm

SID = "s-look"
SERVER_S = 180.0  # python3 starting under emulation


def _output(viewer: Viewer) -> str:
    return "".join(
        str(e["data"].get("data", "")) for e in viewer.events if e["type"] == "terminal.output"
    )


async def _port(viewer: Viewer) -> int:
    with anyio.fail_after(SERVER_S):
        while not (found := re.search(r"port (\d+)", _output(viewer))):
            await viewer.receive_one()
    return int(found[1])


async def _get(viewer: Viewer, port: int, path: str) -> bytes:
    with anyio.fail_after(60):
        while True:  # the daemon sees the new listener on its next scan of the session
            try:
                opened = await viewer.call("port/open", {"session_id": SID, "port": port})
                break
            except RuntimeError:
                await anyio.sleep(1)
    stream = opened["stream_id"]
    request = f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode()
    await viewer.call(
        "port/send", {"stream_id": stream, "data": base64.b64encode(request).decode()}
    )
    body = b""
    with anyio.fail_after(60):
        while True:
            for note in viewer.notifications:
                params: dict[str, Any] = note.get("params") or {}
                if params.get("stream_id") != stream:
                    continue
                if note["method"] == "port/data":
                    body += base64.b64decode(params["data"])
                elif note["method"] == "port/closed":
                    return body
            viewer.notifications.clear()
            await viewer.receive_one()


def test_a_terminal_and_its_dev_server_through_the_tls_port(node: BootedNode) -> None:
    async def run() -> tuple[str, bytes, str]:
        async with node.viewer(subject="erin") as viewer:
            await viewing.start(viewer, "fake", "/srv/workspaces/erin/look", SID)
            opened = await viewer.call("terminal/open", {"session_id": SID, "cols": 200})
            tid = opened["terminal_id"]
            command = "id -un; echo hello-from-the-vm > page.txt; python3 -m http.server 0\n"
            await viewer.call(
                "terminal/input", {"session_id": SID, "terminal_id": tid, "data": command}
            )
            port = await _port(viewer)
            body = await _get(viewer, port, "/page.txt")
            await viewer.call("session/stop", {"session_id": SID}, timeout=120)
            return _output(viewer), body, opened.get("state", "")

    output, body, _ = node.plane.run(run)
    assert "vm-agent-u" in output  # the shell runs as an agent user, not the daemon's root
    assert b"200 OK" in body.split(b"\r\n", 1)[0] and b"hello-from-the-vm" in body
