"""The credential socket itself: a second daemon never takes a live one's socket; a request
that is not one, or from a process of no session, gets an error line and no token."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path, PurePosixPath

import anyio
import pytest

from vm_agent.common.redact import Redactor
from vm_agent.gitwork.broker import Candidate, CredentialBroker, TokenCache
from vm_agent.gitwork.helper import ask
from vm_agent.gitwork.spec import RepositorySpec

pytestmark = [pytest.mark.anyio]

SPEC = RepositorySpec.model_validate(
    {
        "workspace_id": "ws-1",
        "url": "https://github.com/acme/widgets.git",
        "task_branch": "t",
        "author": {"name": "A", "email": "a@example.com"},
    }
)
REQUEST = b"protocol=https\nhost=github.com\npath=acme/widgets.git\n\n"


def broker(path: Path, candidates: list[Candidate], minted: list[str]) -> CredentialBroker:
    async def mint(ws: str) -> tuple[str, float]:
        minted.append(ws)
        return "plain-token-value-1", 1e12

    def no_cgroups(_: PurePosixPath) -> Path | None:
        return None

    return CredentialBroker(
        path,
        candidates=lambda: candidates,
        tokens=TokenCache(mint, Redactor()),
        cgroup_dir=no_cgroups,
    )


@pytest.fixture
def sock() -> Path:
    # Short: a unix socket's path is at most 107 bytes.
    return Path(f"/tmp/vmat-sock-{uuid.uuid4().hex[:8]}/s.sock")


async def test_a_live_socket_is_not_taken_and_answers_by_uid(sock: Path) -> None:
    minted: list[str] = []
    mine = [Candidate("s1", os.getuid(), None, SPEC)]
    async with anyio.create_task_group() as tg:
        await tg.start(broker(sock, mine, minted).serve)
        second = broker(sock, [], minted)
        await tg.start(second.serve)  # returns at once: the first one keeps it
        answer = await anyio.to_thread.run_sync(ask, str(sock), REQUEST)
        assert b"password=plain-token-value-1" in answer and minted == ["ws-1"]
        # The helper as git runs it: the answer on stdout.
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "vm_agent.gitwork.helper", "--socket", str(sock), "get"],
                input=REQUEST,
                capture_output=True,
                check=True,
            )
        )
        assert b"password=plain-token-value-1" in done.stdout
        garbage = await anyio.to_thread.run_sync(ask, str(sock), b"garbage\n\n")
        assert garbage.startswith(b"error=refused") and b"password" not in garbage
        tg.cancel_scope.cancel()
    sock.unlink(missing_ok=True)
    sock.parent.rmdir()


async def test_a_process_of_no_session_gets_nothing(sock: Path) -> None:
    minted: list[str] = []
    others = [Candidate("s1", os.getuid() + 1, None, SPEC)]
    b = broker(sock, others, minted)
    async with anyio.create_task_group() as tg:
        await tg.start(b.serve)
        answer = await anyio.to_thread.run_sync(ask, str(sock), REQUEST)
        tg.cancel_scope.cancel()
    assert answer.startswith(b"error=refused") and minted == [] and b.refusals == 1
    sock.unlink(missing_ok=True)
    sock.parent.rmdir()
