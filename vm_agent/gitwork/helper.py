"""``vm-agent-git-credential``: the workspace's git credential helper (standard library only).

git runs it as ``<helper> --socket PATH get`` with the request on stdin; it hands the request
to the daemon's socket and prints what comes back. It holds no secret and reads no file: the
daemon decides from who is asking. ``store`` and ``erase`` do nothing (no token is kept).
"""

from __future__ import annotations

import socket
import sys

_MAX = 64 * 1024


def ask(socket_path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(socket_path)
        sock.sendall(request if request.endswith(b"\n\n") else request.rstrip(b"\n") + b"\n\n")
        data = bytearray()
        while len(data) < _MAX:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return bytes(data)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "--socket":
        print("usage: vm-agent-git-credential --socket PATH get|store|erase", file=sys.stderr)
        return 2
    socket_path, action = args[1], args[2]
    if action != "get":
        return 0
    request = sys.stdin.buffer.read(_MAX)
    try:
        answer = ask(socket_path, request)
    except OSError as exc:
        print(f"vm-agent-git-credential: the daemon is not reachable: {exc}", file=sys.stderr)
        return 0  # git goes on without credentials and says what failed
    lines = answer.decode("utf-8", "replace").split("\n")
    errors = [line[len("error=") :] for line in lines if line.startswith("error=")]
    if errors:
        print(f"vm-agent-git-credential: {errors[0]}", file=sys.stderr)
        return 0
    sys.stdout.write(answer.decode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
