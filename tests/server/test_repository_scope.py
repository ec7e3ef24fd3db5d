"""session/start's ``repository`` and ``workspace/push`` are the node scope's alone (issue 23);
malformed repositories are -32602 with nothing started; the other errors of the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import RpcError, daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def repository(**kw: Any) -> dict[str, Any]:
    return {
        "workspace_id": "ws-1",
        "url": "http://127.0.0.1:9/acme/widgets.git",
        "base_branch": "main",
        "task_branch": "vm-agent/t-1",
        "author": {"name": "Alice", "email": "alice@example.com"},
        **kw,
    }


async def _error(client: Any, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as err:
        await client.call(method, params)
    return err.value


async def test_a_user_token_may_neither_give_a_repository_nor_push(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        alice_token = d.token("read", "write", subject="alice")
        async with d.viewer(alice_token) as alice, d.viewer(d.token("node")) as node:
            err = await _error(
                alice,
                "session/start",
                {"agent": "echo", "cwd": str(d.workdir), "repository": repository()},
            )
            assert err.code == -32003 and "repository" in err.message
            assert (await alice.call("session/list"))["sessions"] == []
            own = await d.start(alice, "echo", session_id="s-alice")
            err = await _error(alice, "workspace/push", {"session_id": own["session_id"]})
            assert err.code == -32003 and "node" in err.message
            # The node scope: the contract's errors.
            err = await _error(node, "workspace/push", {"session_id": "s-alice"})
            assert err.code == -32602 and "no repository" in err.message
            err = await _error(node, "workspace/push", {"session_id": "s-nope"})
            assert err.code == -32002


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "http://x-access-token:t@127.0.0.1:9/acme/widgets.git"},
        {"url": "file:///etc/passwd"},
        {"url": "ext::sh -c id"},
        {"task_branch": "--upload-pack=touch /tmp/x"},
        {"task_branch": "a..b"},
        {"base_branch": "main.lock"},
        {"author": {"name": "A\nB", "email": "a@example.com"}},
        {"workspace_id": "../ws"},
        {"surprise": 1},
    ],
)
async def test_a_malformed_repository_is_invalid_params_and_nothing_starts(
    tmp_path: Path, bad: dict[str, Any]
) -> None:
    async with daemon(tmp_path) as d, d.viewer(d.token("node")) as node:
        params = {"agent": "echo", "cwd": str(d.workdir), "repository": repository(**bad)}
        err = await _error(node, "session/start", params)
        assert err.code == -32602, err
        assert (await node.call("session/list"))["sessions"] == []


async def test_without_git_set_up_a_session_with_a_repository_ends_in_error(
    tmp_path: Path,
) -> None:
    async with daemon(tmp_path) as d, d.viewer(d.token("node")) as node:
        described = await d.start(node, "echo", repository=repository())
        assert described["state"] == "error"
        assert "http://127.0.0.1:9/acme/widgets.git" in described["error"]
        assert described["repository"]["task_branch"] == "vm-agent/t-1"
