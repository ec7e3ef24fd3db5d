"""SdNotifier against a real Unix datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from vm_agent.runtime.sdnotify import SdNotifier

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    short_dir = None
    if len(str(path)) > 100:  # AF_UNIX paths are limited to ~108 bytes
        short_dir = tempfile.mkdtemp(prefix="sdn")
        path = Path(short_dir) / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        if short_dir:
            os.rmdir(short_dir)


def test_ready_status_stopping_arrive(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready()
    notifier.status("serving on 127.0.0.1:8080\nsecond line")
    notifier.notify(STATUS="busy", MAINPID=os.getpid())
    notifier.watchdog()
    notifier.stopping()
    assert sock.recv(4096) == b"READY=1\n"
    assert sock.recv(4096) == b"STATUS=serving on 127.0.0.1:8080 second line\n"
    assert sock.recv(4096) == f"STATUS=busy\nMAINPID={os.getpid()}\n".encode()
    assert sock.recv(4096) == b"WATCHDOG=1\n"
    assert sock.recv(4096) == b"STOPPING=1\n"
    notifier.close()


def test_abstract_socket() -> None:
    name = f"vm-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        notifier = SdNotifier.from_env({"NOTIFY_SOCKET": "@" + name})
        notifier.ready()
        assert sock.recv(4096) == b"READY=1\n"
        notifier.close()


def test_unset_socket_is_a_no_op() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "1000000"}):
        notifier = SdNotifier.from_env(env)
        assert not notifier.enabled
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
        assert notifier.watchdog_interval_s() is None


def test_watchdog_interval() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "20000000"}
    assert SdNotifier.from_env(env).watchdog_interval_s() == 10.0
    ours = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert SdNotifier.from_env(ours).watchdog_interval_s() == 10.0
    theirs = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SdNotifier.from_env(theirs).watchdog_interval_s() is None
    assert SdNotifier.from_env({"NOTIFY_SOCKET": "/x"}).watchdog_interval_s() is None
    bad = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "soon"}
    assert SdNotifier.from_env(bad).watchdog_interval_s() is None


@pytest.mark.anyio
async def test_watchdog_loop_pings_until_cancelled(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    sock.setblocking(False)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SdNotifier.from_env(env)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.watchdog_loop)
            for _ in range(3):
                await anyio.wait_readable(sock)
                assert sock.recv(4096) == b"WATCHDOG=1\n"
            tg.cancel_scope.cancel()
    notifier.close()


@pytest.mark.anyio
async def test_watchdog_loop_disabled_for_another_pid(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}
    notifier = SdNotifier.from_env(env)
    with anyio.fail_after(30):
        await notifier.watchdog_loop()  # returns at once: not our watchdog
    notifier.ready()
    # The first datagram is READY: the loop sent no ping.
    assert sock.recv(4096) == b"READY=1\n"


def test_send_errors_logged_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.WARNING, logger="vm_agent.runtime.sdnotify"):
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    failures = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(failures) == 1
    notifier.close()
