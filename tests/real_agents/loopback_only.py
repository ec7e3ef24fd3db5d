"""Runs an agent in a network namespace of its own where only loopback exists.

Real agents try the network on their own (Claude Code looks up raw.githubusercontent.com
for a plugin blocklist; gemini-cli has update checks and usage statistics): inside this
namespace every such try fails at once, on this machine, and nothing leaves it. The model
stand-in is reached through a forward: a TCP port on the namespace's loopback piped to the
stand-in's Unix socket (filesystem sockets cross network namespaces).

Usage, under ``unshare --net --map-root-user`` (add ``--mount`` for the last two)::

    python loopback_only.py --forward 18765=/tmp/ra-x/model.sock -- claude-agent-acp
    python loopback_only.py --forward ... --read-only DIR --mask FILE -- gemini --acp

``--read-only`` and ``--mask`` hide a directory's writes and a file's content from the
agent alone: a write or read that still works went through the client's ``fs/*``.

Start it as a process group leader (the daemon starts every agent so). The forwarder is a
child in that group, stopped with it; the agent itself replaces this process (same pid), so
whoever started it still signals the agent.
Standard library only: it runs from any working directory, before anything is imported.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import selectors
import socket
import struct
import sys
import threading
import time

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
# statvfs flag -> the mount flag a remount in a user namespace must keep (they are locked)
_KEPT = {2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME}
_ST_RELATIME = 4096


def bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _mount(source: str | None, target: str, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    src = source.encode() if source is not None else None
    if libc.mount(src, target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def make_read_only(path: str) -> None:
    """``path`` read-only in this mount namespace (under ``unshare --mount``)."""
    _mount(path, path, MS_BIND | MS_REC)
    f_flag = os.statvfs(path).f_flag
    kept = sum(flag for st, flag in _KEPT.items() if f_flag & st)
    kept |= MS_RELATIME if f_flag & _ST_RELATIME else 0
    _mount(None, path, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)


def mask(path: str) -> None:
    """``path`` reads as empty in this mount namespace: /dev/null is bound over it."""
    _mount("/dev/null", path, MS_BIND)


def only_loopback_left() -> bool:
    """True when no interface but ``lo`` is in this network namespace."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _pipe(a: socket.socket, b: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_READ, b)
    sel.register(b, selectors.EVENT_READ, a)
    try:
        while True:
            for key, _ in sel.select():
                src: socket.socket = key.fileobj  # type: ignore[assignment]
                data = src.recv(65536)
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


def _serve(listener: socket.socket, target: str) -> None:
    while True:
        conn, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(target)
        except OSError:
            conn.close()
            upstream.close()
            continue
        threading.Thread(target=_pipe, args=(conn, upstream), daemon=True).start()


def _group_has_others() -> bool:
    """Whether any live process but this one is in this process group."""
    me, group = os.getpid(), os.getpgrp()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in (b"Z", b"X") and int(fields[2]) == group:
            return True
    return False


def forward(listeners: list[tuple[socket.socket, str]]) -> None:
    """The forwarder child: while anything of the agent's process group lives.

    Not tied to the agent's own pid: a wrapper that dies while its native child goes on
    (codex-acp) must not take the model's connection with it; whoever stops the agent's
    group stops this too, and left alone it ends with the group's last other member.
    """
    # The agent's pipes are the agent's: holding them open would hide its end from its
    # client (stdout's EOF, stderr's drain).
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for listener, target in listeners:
        threading.Thread(target=_serve, args=(listener, target), daemon=True).start()
    while _group_has_others():
        time.sleep(1.0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forward", action="append", default=[], metavar="PORT=SOCKET")
    parser.add_argument("--read-only", action="append", default=[], metavar="DIR")
    parser.add_argument("--mask", action="append", default=[], metavar="FILE")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the agent's command after --")
    if not only_loopback_left():
        print("loopback_only: run me under `unshare --net`", file=sys.stderr)
        return 2
    bring_up_loopback()
    for path in args.read_only:
        make_read_only(path)
    for path in args.mask:
        mask(path)
    listeners = []
    for spec in args.forward:
        port, _, target = spec.partition("=")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(port)))  # listening before the agent starts
        listener.listen(64)
        listeners.append((listener, target))
    if listeners and os.fork() == 0:
        try:
            forward(listeners)
        finally:
            os._exit(0)
    for listener, _ in listeners:
        listener.close()
    os.execvp(command[0], command)
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
