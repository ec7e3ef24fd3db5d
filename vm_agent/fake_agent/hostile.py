"""The `hostile` scenario: an agent that tries what a model-chosen program might.

The prompt's text is a JSON list of attacks, each an object with one of the keys below;
the answer is one message chunk, a JSON list with one result per attack:
``{"attack": ..., "ok": bool, "detail": str, "refused": str | None}``. ``ok`` means the
attempt succeeded (for an attack: an escape). ``refused`` says how a failed one failed, so
a test can tell a refusal from a mistake (a mistyped path is ``ENOENT``, not ``EACCES``):
the errno's name (``EACCES``, ``EPERM``) for a system call, ``rpc <code>: <message>`` for
a client call the daemon answered with an error, ``None`` when it did not fail or failed
for another reason (an unknown attack, a helper that crashed). The test decides what
should have been refused, and how.

- ``open``: read a byte of a file (a token, an env file, /proc/PID/environ or mem)
- ``list``: list a directory (a state dir, another owner's home, /proc/PID/fd)
- ``write``: create or append to a file
- ``signal``: ``kill(pid, 0)``, which the kernel permits exactly when a real signal would be
- ``fs_read`` / ``fs_write``: the client's ``fs/*`` (``content`` for a write)
- ``symlink``: ``[target, link]``, to set up a link escape
- ``setsid``: start a daemonized descendant (double fork + setsid) that sleeps; its pid
- ``terminal_setsid``: the same from a terminal, then release the terminal; the pid
- ``whoami``: uid, gid, groups, HOME and the environment's names
- ``connect``: ``[host, port]``: a TCP connection (the metadata rule, inside a VM only)
- ``allocate_mb``: allocate and touch that many MiB, then free it (memory.max)
- ``burn_cpu_s``: spin for that many seconds of wall time; CPU seconds used (cpu.max)
- ``fs_read_flood``: ``{"path", "count", "stall_s"}``: that many reads at once while not
  reading stdin for ``stall_s`` seconds (the daemon must bound what it holds)
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import anyio

from vm_agent.fake_agent.turn import END_TURN, Turn
from vm_agent.fake_agent.wire import ClientCallError, log

_DAEMONIZE = (
    "import os, sys, time\n"
    "if os.fork():\n"
    "    os._exit(0)\n"
    "os.setsid()\n"
    "print(os.getpid(), flush=True)\n"
    "os.close(1); os.close(2)\n"
    "time.sleep(int(sys.argv[1]))\n"
)
_SLEEP_S = 600
_CONNECT_TIMEOUT_S = 5
_STEP_MB = 16


def _refusal(exc: BaseException) -> str | None:
    if isinstance(exc, ClientCallError):
        return f"rpc {exc.code}: {exc.message}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return None


def _error(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        name = os.strerror(exc.errno) if exc.errno else str(exc)
        return f"{type(exc).__name__}: {name}"
    return f"{type(exc).__name__}: {exc}"


def _open(path: str) -> str:
    with open(path, "rb") as handle:
        return f"read {len(handle.read(1))} byte(s)"


def _write(path: str) -> str:
    with open(path, "ab") as handle:
        handle.write(b"hostile\n")
    return "written"


def _setsid() -> str:
    done = subprocess.run(
        [sys.executable, "-c", _DAEMONIZE, str(_SLEEP_S)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def _allocate(mb: int) -> str:
    chunks = []
    for done in range(0, mb, _STEP_MB):
        chunk = bytearray(_STEP_MB * 1024 * 1024)
        chunk[::4096] = b"x" * len(chunk[::4096])  # touch every page
        chunks.append(chunk)
        log(f"fake-agent: allocated {done + _STEP_MB} MiB")
    return f"allocated {mb} MiB"


def _burn(seconds: float) -> str:
    start, cpu = time.monotonic(), time.process_time()
    while time.monotonic() - start < seconds:
        pass
    return json.dumps({"wall_s": seconds, "cpu_s": round(time.process_time() - cpu, 3)})


async def _terminal_setsid(turn: Turn) -> str:
    sid = turn.session.session_id
    call = turn.peer.request
    created = await call(
        "terminal/create",
        {
            "sessionId": sid,
            "command": sys.executable,
            "args": ["-c", _DAEMONIZE, str(_SLEEP_S)],
            "cwd": turn.session.cwd,
        },
    )
    ids = {"sessionId": sid, "terminalId": created["terminalId"]}
    await call("terminal/wait_for_exit", ids)
    output = await call("terminal/output", ids)
    await call("terminal/release", ids)
    return str(output.get("output", "")).strip()


async def _flood(turn: Turn, spec: dict[str, Any]) -> str:
    sizes: list[int] = []
    errors: list[str] = []

    async def one() -> None:
        try:
            answer = await turn.peer.request(
                "fs/read_text_file", {"sessionId": turn.session.session_id, "path": spec["path"]}
            )
            sizes.append(len(answer.get("content", "")))
        except ClientCallError as exc:
            errors.append(exc.message)

    async with anyio.create_task_group() as tg:
        for _ in range(int(spec["count"])):
            tg.start_soon(one)
        await anyio.sleep(0.05)  # let every request go out
        time.sleep(float(spec.get("stall_s", 0)))  # noqa: ASYNC251 - not reading stdin is the point
    return json.dumps({"answers": len(sizes), "bytes": sum(sizes), "errors": errors[:3]})


async def _client_call(turn: Turn, method: str, params: dict[str, Any]) -> str:
    result = await turn.peer.request(method, {"sessionId": turn.session.session_id, **params})
    if method == "fs/read_text_file":
        return f"read {len(result.get('content', ''))} characters"
    return "written"


async def _one(turn: Turn, attack: dict[str, Any]) -> str:
    match attack:
        case {"open": str(path)}:
            return _open(path)
        case {"list": str(path)}:
            return f"{len(os.listdir(path))} entries"
        case {"write": str(path)}:
            return _write(path)
        case {"signal": int(pid)}:
            os.kill(pid, 0)
            return "permitted"
        case {"fs_read": str(path)}:
            return await _client_call(turn, "fs/read_text_file", {"path": path})
        case {"fs_write": str(path), **rest}:
            content = str(rest.get("content", "hostile\n"))
            return await _client_call(
                turn, "fs/write_text_file", {"path": path, "content": content}
            )
        case {"symlink": [str(target), str(link)]}:
            os.symlink(target, link)
            return "linked"
        case {"setsid": _}:
            return _setsid()
        case {"terminal_setsid": _}:
            return await _terminal_setsid(turn)
        case {"connect": [str(host), int(port)]}:
            with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
                return "connected"
        case {"whoami": _}:
            return json.dumps(
                {
                    "uid": os.getuid(),
                    "gid": os.getgid(),
                    "groups": os.getgroups(),
                    "home": os.environ.get("HOME"),
                    "env": sorted(os.environ),
                    "umask": _umask(),
                }
            )
        case {"allocate_mb": int(mb)}:
            return _allocate(mb)
        case {"burn_cpu_s": int(seconds) | float(seconds)}:
            return _burn(float(seconds))
        case {"fs_read_flood": dict(spec)}:
            return await _flood(turn, spec)
    raise ValueError(f"unknown attack {attack!r}")


def _umask() -> str:
    mask = os.umask(0)
    os.umask(mask)
    return f"{mask:04o}"


async def hostile(turn: Turn, text: str) -> str:
    try:
        attacks = json.loads(text)
    except ValueError:
        attacks = []
    results = []
    for attack in attacks if isinstance(attacks, list) else []:
        refused: str | None = None
        try:
            detail = await _one(turn, attack)
            ok = True
        except (OSError, ClientCallError, ValueError, subprocess.SubprocessError) as exc:
            detail, ok = _error(exc) if not isinstance(exc, ClientCallError) else exc.message, False
            refused = _refusal(exc)
        results.append({"attack": attack, "ok": ok, "detail": detail, "refused": refused})
    turn.chunk(json.dumps(results))
    return END_TURN
