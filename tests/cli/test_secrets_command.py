"""`vm-agent secrets` against a control plane: set (the value from standard input, never
printed), list (names only), delete; refusals exit 2 with the status."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from anyio import to_thread

from control_plane.settings import ControlPlaneSettings
from tests.control_plane.harness import running
from vm_agent.cli.main import main
from vm_agent.cli.secrets import read_value

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.mark.parametrize(
    ("typed", "value"),
    [("v\n", "v"), ("v\r\n", "v"), ("v", "v"), ("v\n\n", "v\n"), ("a b\n", "a b")],
)
def test_one_trailing_newline_is_the_terminals(typed: str, value: str) -> None:
    assert read_value(typed) == value


async def test_set_list_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp", public_url="http://127.0.0.1:1", key_activation_delay_s=0
    )
    async with running(settings) as cp:
        token = cp.plane.tokens.mint_user_token("alice")
        base = ["secrets", "--url", cp.url, "--token", token]

        async def cli(*argv: str, stdin: str = "") -> int:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
            return await to_thread.run_sync(main, [*base, *argv])

        assert await cli("set", "gh", stdin="ghp_typed-value\n") == 0
        assert await cli("list") == 0
        out = capsys.readouterr()
        assert out.out.splitlines() == ["secret gh stored", "gh"]
        assert "ghp_typed-value" not in out.out + out.err
        r = await cp.client.get("/api/secrets", headers=cp.user("alice"))
        assert [s["name"] for s in r.json()["secrets"]] == ["gh"]
        assert await cli("set", "bad name", stdin="x") == 2
        assert await cli("set", "empty", stdin="\n") == 2
        assert await cli("delete", "gh") == 0
        assert await cli("delete", "gh") == 2
        err = capsys.readouterr().err
        assert "422" in err and "no value" in err and "404" in err
