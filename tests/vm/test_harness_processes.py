"""The harness's process and socket parts without a VM: the reaper takes its group down
however its parent ends, and the guest agent client skips answers meant for requests it
gave up on. The guest agent's stand-in speaks the same protocol over a unix socket; the
real agent is exercised by the VM tests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.vm.launch import REAPER
from tests.vm.qga import RESYNC, GuestAgent, GuestAgentError, GuestAgentTimeout

pytestmark = pytest.mark.integration


def eventually(check: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def child_pid(pid_file: Path) -> int:
    eventually(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    return int(pid_file.read_text())


def reaped_command(pid_file: Path) -> list[str]:
    # the command writes its pid and stays, as qemu would
    return [
        sys.executable,
        str(REAPER),
        "sh",
        "-c",
        f"echo $$ > {pid_file}; exec sleep 600",
    ]


def test_closing_the_pipe_kills_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    reaper = subprocess.Popen(
        reaped_command(pid_file), stdin=subprocess.PIPE, start_new_session=True
    )
    child = child_pid(pid_file)
    assert not gone(child)
    assert reaper.stdin is not None
    reaper.stdin.close()
    assert reaper.wait(timeout=30) == -signal.SIGKILL
    eventually(lambda: gone(child))


def test_a_signal_to_the_reaper_kills_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    reaper = subprocess.Popen(
        reaped_command(pid_file), stdin=subprocess.PIPE, start_new_session=True
    )
    child = child_pid(pid_file)
    reaper.send_signal(signal.SIGTERM)
    reaper.wait(timeout=30)
    eventually(lambda: gone(child))
    assert reaper.stdin is not None
    reaper.stdin.close()


def test_a_parent_killed_by_sigkill_takes_the_group_down(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # the parent holds the pipe and dies without any cleanup, as a killed pytest would
    parent_code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        subprocess.Popen({reaped_command(pid_file)!r}, stdin=subprocess.PIPE,
                         start_new_session=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    child = child_pid(pid_file)
    parent.kill()
    parent.wait(timeout=30)
    eventually(lambda: gone(child))


def test_the_reaper_exits_with_its_command() -> None:
    reaper = subprocess.Popen(
        [sys.executable, str(REAPER), "sh", "-c", "exit 7"],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert reaper.wait(timeout=30) == 7
    finally:
        assert reaper.stdin is not None
        reaper.stdin.close()


class FakeAgent:
    """The guest agent's wire protocol, on a unix socket; deaf to syncs until `wake()`
    (as the channel is before the guest's agent starts), then answering what queued."""

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.awake = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self.awake.set()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            buffer = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._answer(conn, json.loads(line.replace(RESYNC, b"")))

    def _answer(self, conn: socket.socket, request: dict[str, object]) -> None:
        self.awake.wait()
        command, arguments = request["execute"], request.get("arguments")
        assert isinstance(arguments, dict) or arguments is None
        if command == "guest-sync-delimited":
            assert arguments is not None
            conn.sendall(RESYNC + json.dumps({"return": arguments["id"]}).encode() + b"\n")
        elif command == "slow":
            time.sleep(0.5)
            conn.sendall(b'{"return": "slow"}\n')
        elif command == "echo":
            assert arguments is not None
            conn.sendall(json.dumps({"return": arguments["value"]}).encode() + b"\n")
        else:
            conn.sendall(b'{"error": {"class": "CommandNotFound", "desc": "no such command"}}\n')

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[tuple[FakeAgent, GuestAgent]]:
    path = tmp_path / "qga.sock"
    fake = FakeAgent(path)
    client = GuestAgent(path)
    try:
        yield fake, client
    finally:
        client.close()
        fake.close()


def test_sync_waits_for_a_live_agent_and_skips_queued_answers(
    fake_agent: tuple[FakeAgent, GuestAgent],
) -> None:
    fake, client = fake_agent
    assert not client.sync(timeout=0.2)
    assert not client.sync(timeout=0.2)
    fake.wake()
    # the two earlier syncs are answered first; only the newest id counts
    assert client.sync(timeout=10)
    assert client.call("echo", {"value": 1}) == 1


def test_an_answer_that_comes_after_its_call_gave_up_is_not_taken_for_the_next(
    fake_agent: tuple[FakeAgent, GuestAgent],
) -> None:
    fake, client = fake_agent
    fake.wake()
    assert client.sync(timeout=10)
    with pytest.raises(GuestAgentTimeout):
        client.call("slow", timeout=0.1)
    assert client.call("echo", {"value": "next"}, timeout=10) == "next"


def test_an_error_answer_is_raised(fake_agent: tuple[FakeAgent, GuestAgent]) -> None:
    fake, client = fake_agent
    fake.wake()
    with pytest.raises(GuestAgentError, match="CommandNotFound"):
        client.call("guest-nothing", timeout=10)
    assert client.call("echo", {"value": [1, 2]}, timeout=10) == [1, 2]


def test_no_socket_is_an_error_not_a_hang(tmp_path: Path) -> None:
    client = GuestAgent(tmp_path / "absent.sock")
    assert not client.sync(timeout=0.2)
    with pytest.raises(OSError):
        client.call("echo", {"value": 1}, timeout=1)
