"""The daemon's side of the workspace's credential helper: a unix socket.

The asking process is known by the kernel, not by what it says: ``SO_PEERCRED`` gives its
pid and uid, ``/proc/<pid>/cgroup`` its cgroup, and the session whose cgroup holds that one
(and whose agent user the uid is) names the only repository it may get a token for. Where
the daemon runs without cgroups, the uid alone decides, and only when exactly one session
with a repository runs as that uid (an owner with two such sessions gets none: refused
rather than guessed). The token is a ``read`` one from the control plane, cached per
workspace until shortly before it expires, registered with the redactor the moment it
arrives, and written only to the socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from vm_agent.common.redact import Redactor
from vm_agent.containment.cgroupfs import parse_own_cgroup
from vm_agent.gitwork.spec import (
    RepositorySpec,
    credential_answer,
    parse_credential_request,
    request_matches,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024
REFRESH_BEFORE_S = 300.0
_ANSWER_WITHIN_S = 30.0


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    cgroup: Path | None  # the asking process's cgroup directory (None: no cgroups)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live session with a repository, as the broker weighs it."""

    session_id: str
    uid: int | None
    cgroup: Path | None
    repository: RepositorySpec


def session_of_peer(peer: Peer, candidates: Iterable[Candidate]) -> Candidate | None:
    """The one session the asking process belongs to (pure); None when there is none or
    it cannot be told apart."""
    listed = [c for c in candidates if c.uid is None or c.uid == peer.uid]
    if peer.cgroup is not None:
        inside = [
            c
            for c in listed
            if c.cgroup is not None and (peer.cgroup == c.cgroup or c.cgroup in peer.cgroup.parents)
        ]
        return inside[0] if len(inside) == 1 else None
    uncontained = [c for c in listed if c.cgroup is None]
    return uncontained[0] if len(uncontained) == 1 else None


Mint = Callable[[str], Awaitable[tuple[str, float]]]  # workspace id -> (token, expires at)


class TokenCache:
    """One token per workspace, asked again when it has less than ``refresh_before_s`` left."""

    def __init__(
        self,
        mint: Mint,
        redactor: Redactor,
        *,
        clock: Callable[[], float] = time.time,
        refresh_before_s: float = REFRESH_BEFORE_S,
    ) -> None:
        self._mint = mint
        self._redactor = redactor
        self._clock = clock
        self._refresh_before_s = refresh_before_s
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def get(self, workspace_id: str) -> str:
        lock = self._locks.setdefault(workspace_id, anyio.Lock())
        async with lock:  # one mint at a time per workspace, however many gits ask
            held = self._tokens.get(workspace_id)
            if held is not None and held[1] - self._clock() > self._refresh_before_s:
                return held[0]
            token, expires_at = await self._mint(workspace_id)
            self._redactor.add_secret(token)
            self._tokens[workspace_id] = (token, expires_at)
            return token


def peer_of(stream: SocketStream, cgroup_dir: Callable[[PurePosixPath], Path | None]) -> Peer:
    sock: socket.socket = stream.extra(SocketAttribute.raw_socket)  # noqa: S610 (anyio's)
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    cgroup = None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            own = parse_own_cgroup(f.read())
        if own is not None:
            cgroup = cgroup_dir(own)
    except OSError:
        pass
    return Peer(pid, uid, cgroup)


def _answered(path: Path) -> bool:
    """Whether a process listens on the unix socket ``path`` now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class CredentialBroker:
    def __init__(
        self,
        path: Path,
        *,
        candidates: Callable[[], Iterable[Candidate]],
        tokens: TokenCache,
        cgroup_dir: Callable[[PurePosixPath], Path | None],
    ) -> None:
        self.path = path
        self._candidates = candidates
        self._tokens = tokens
        self._cgroup_dir = cgroup_dir
        self.refusals = 0  # for tests and metrics

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if await anyio.to_thread.run_sync(_answered, self.path):
            # Never take another live daemon's socket: its sessions would ask this one.
            log.error("git credentials: %s is served by another process; not serving", self.path)
            task_status.started()
            return
        self.path.unlink(missing_ok=True)
        listener = await anyio.create_unix_listener(self.path)
        try:
            # Any local process may ask; the answer depends on who it is.
            os.chmod(self.path, 0o666)  # noqa: S103
            async with listener:
                task_status.started()
                await listener.serve(self._handle)
        finally:
            self.path.unlink(missing_ok=True)

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(_ANSWER_WITHIN_S):
                peer = peer_of(stream, self._cgroup_dir)
                data = bytearray()
                try:
                    while b"\n\n" not in data and len(data) < MAX_REQUEST_BYTES:
                        data += await stream.receive(4096)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
                answer = await self.answer(peer, bytes(data[:MAX_REQUEST_BYTES]))
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await stream.send(answer.encode("utf-8"))

    async def answer(self, peer: Peer, request: bytes) -> str:
        """The helper's answer: credential lines, or ``error=...`` for git's stderr."""
        try:
            fields = parse_credential_request(request.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._refuse(peer, "not a credential request")
        session = session_of_peer(peer, self._candidates())
        if session is None:
            return self._refuse(peer, "this process belongs to no session with a repository")
        why = request_matches(session.repository, fields)
        if why is not None:
            return self._refuse(peer, f"session {session.session_id}: {why}")
        try:
            token = await self._tokens.get(session.repository.workspace_id)
        except Exception as exc:  # the control plane's refusal or absence: git fails cleanly
            log.warning("git credentials for session %s: %s", session.session_id, exc)
            return "error=the control plane gave no token for this repository\n\n"
        return credential_answer(token)

    def _refuse(self, peer: Peer, why: str) -> str:
        self.refusals += 1
        log.warning("git credentials refused to pid %d (uid %d): %s", peer.pid, peer.uid, why)
        return f"error=refused: {why}\n\n"
