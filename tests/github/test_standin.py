"""The GitHub stand-in itself: it refuses what GitHub refuses, so the client's tests mean
something. Signed here with PyJWT directly, not with the control plane's client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.github.conftest import ACME, APP_ID, OTHER, Hub, git, remote

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def app_jwt(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iat": now - 60, "exp": now + 540, "iss": str(APP_ID), **claims}
    return jwt.encode(body, key, algorithm="RS256")


async def token_for(hub: Hub, key: rsa.RSAPrivateKey, installation: int, **body: Any) -> str:
    async with httpx.AsyncClient(base_url=hub.url) as client:
        r = await client.post(
            f"/app/installations/{installation}/access_tokens",
            json=body,
            headers={"Authorization": f"Bearer {app_jwt(key)}"},
        )
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


async def test_app_jwt_is_checked_like_github(hub: Hub, app_key: rsa.RSAPrivateKey) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    bad = {
        "another key": jwt.encode(
            {"iat": now, "exp": now + 60, "iss": str(APP_ID)}, other_key, "RS256"
        ),
        "another app": app_jwt(app_key, iss="1"),
        "exp past ten minutes": app_jwt(app_key, iat=now, exp=now + 601),
        "expired": app_jwt(app_key, iat=now - 700, exp=now - 100),
        "iat in the future": app_jwt(app_key, iat=now + 300, exp=now + 600),
        "HS256": jwt.encode({"iat": now, "exp": now + 60, "iss": str(APP_ID)}, "k" * 32, "HS256"),
        "not a JWT": "ghs_whatever",
    }
    async with httpx.AsyncClient(base_url=hub.url) as client:
        for why, token in bad.items():
            r = await client.get(
                f"/app/installations/{ACME}", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 401, why
        r = await client.get(f"/app/installations/{ACME}")
        assert r.status_code == 401
        r = await client.get(
            f"/app/installations/{ACME}", headers={"Authorization": f"Bearer {app_jwt(app_key)}"}
        )
        assert r.status_code == 200
        assert r.json()["account"]["login"] == "acme"
    assert [c.auth for c in hub.state.calls][-2:] == ["none", "app-jwt"]


async def test_installation_tokens_have_github_s_shape_and_scope(
    hub: Hub, app_key: rsa.RSAPrivateKey
) -> None:
    headers = {"Authorization": f"Bearer {app_jwt(app_key)}"}
    async with httpx.AsyncClient(base_url=hub.url) as client:
        r = await client.post(
            f"/app/installations/{ACME}/access_tokens",
            json={"repositories": ["widgets"], "permissions": {"contents": "write"}},
            headers=headers,
        )
        assert r.status_code == 201
        body = r.json()
        assert body["token"].startswith("ghs_")
        assert body["repository_selection"] == "selected"
        assert [x["full_name"] for x in body["repositories"]] == ["acme/widgets"]
        assert body["permissions"] == {"contents": "write"}
        expires = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
        assert abs(expires - time.timezone - (time.time() + 3600)) < 120
        # Another organisation's repository, or more than the App was granted: 422.
        for wrong in (
            {"repositories": ["secret"]},
            {"repositories": ["widgets"], "permissions": {"administration": "write"}},
            {"repositories": ["widgets"], "permissions": {"contents": "admin"}},
        ):
            r = await client.post(
                f"/app/installations/{ACME}/access_tokens", json=wrong, headers=headers
            )
            assert r.status_code == 422, wrong
        r = await client.post("/app/installations/999/access_tokens", json={}, headers=headers)
        assert r.status_code == 404


async def test_git_accepts_a_token_only_for_its_repository(
    hub: Hub, app_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    token = await token_for(
        hub, app_key, ACME, repositories=["widgets"], permissions={"contents": "write"}
    )
    work = tmp_path / "work"
    work.mkdir()
    await git("clone", "-q", remote(hub.url, token, "acme/widgets"), "w", cwd=work)
    assert (work / "w" / "README.md").read_text() == "widgets\n"
    # The same installation's other repository, another's, no token, a made-up token.
    for url in (
        remote(hub.url, token, "acme/gadgets"),
        remote(hub.url, token, "globex/secret"),
        f"{hub.url}/acme/widgets.git",
        remote(hub.url, "ghs_madeup", "acme/widgets"),
    ):
        done = await git("clone", "-q", url, "x", cwd=work, check=False)
        assert done.returncode != 0, url
        assert not (work / "x").exists()
    # git asks without credentials first; the answers to the ones it then sent:
    answers = [
        (c.auth, c.status)
        for c in hub.state.calls
        if c.path.endswith("/info/refs") and c.auth != "none"
    ]
    assert answers == [("basic", 200), ("basic", 403), ("basic", 403), ("bad", 401)]


async def test_push_a_branch_but_never_the_default_one(
    hub: Hub, app_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    token = await token_for(
        hub, app_key, ACME, repositories=["widgets"], permissions={"contents": "write"}
    )
    work = tmp_path / "w"
    await git("clone", "-q", remote(hub.url, token, "acme/widgets"), str(work), cwd=tmp_path)
    (work / "fix.txt").write_text("fixed\n")
    await git("checkout", "-q", "-b", "task/1", cwd=work)
    await git("add", "fix.txt", cwd=work)
    await git("commit", "-q", "-m", "fix", cwd=work)
    await git("push", "-q", "origin", "task/1", cwd=work)
    head = (await git("rev-parse", "HEAD", cwd=work)).stdout.strip()
    repo = hub.state.repository("acme/widgets")
    assert hub.state.branches(repo)["task/1"] == head

    done = await git("push", "origin", "HEAD:main", cwd=work, check=False)
    assert done.returncode != 0
    assert "GH006: Protected branch update failed for refs/heads/main" in done.stderr
    assert hub.state.branches(repo)["main"] != head

    read_only = await token_for(
        hub, app_key, ACME, repositories=["widgets"], permissions={"contents": "read"}
    )
    await git("remote", "set-url", "origin", remote(hub.url, read_only, "acme/widgets"), cwd=work)
    done = await git("push", "origin", "task/1:task/2", cwd=work, check=False)
    assert done.returncode != 0 and "task/2" not in hub.state.branches(repo)


async def test_user_installations_and_faults(hub: Hub) -> None:
    alice = hub.state.add_user_token("alice", (ACME,))
    async with httpx.AsyncClient(base_url=hub.url) as client:
        r = await client.get("/user/installations", headers={"Authorization": f"Bearer {alice}"})
        assert [i["id"] for i in r.json()["installations"]] == [ACME]
        r = await client.get("/user/installations", headers={"Authorization": "Bearer ghu_no"})
        assert r.status_code == 401
        hub.state.fail_next("GET", "/user/installations", 503, retry_after="0")
        r = await client.get("/user/installations", headers={"Authorization": f"Bearer {alice}"})
        assert (r.status_code, r.headers["retry-after"]) == (503, "0")
    assert OTHER not in [i for i in hub.state.user_tokens[alice].installation_ids]
