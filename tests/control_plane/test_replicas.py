"""Two control-plane processes on one database (PostgreSQL, and SQLite for dev): a node
signed through one verifies with the other's node CA; the same events batch through both
is stored once; a key rotated through one is honoured by the
other; a token minted by one is accepted by the other; a refresh through one revokes the
old token in the other, after the grace of the replica that refreshed it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from control_plane.identity.node_ca import NodeCA
from control_plane.plane import ControlPlane
from control_plane.provisioning.userdata import token_digest
from control_plane.settings import ControlPlaneSettings
from control_plane.storage import provisioning_store
from tests.control_plane.test_main import free_port
from tests.provisioning.pki import csr_pem, handshake

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

PUBLIC_URL = "http://control-plane.test"  # what both replicas sign as (`iss`)
START_TIMEOUT_S = 60
WAIT_S = 30.0
DOMAIN = "nodes.vm-agent.internal"  # the default node domain, both replicas'


@dataclass
class Replica:
    url: str
    state_dir: Path

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20)


def _env(database_url: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROL_PLANE_")}
    env["CONTROL_PLANE_DATABASE_URL"] = database_url
    env["CONTROL_PLANE_PUBLIC_URL"] = PUBLIC_URL
    env["CONTROL_PLANE_KEY_ACTIVATION_DELAY_S"] = "0"
    env["CONTROL_PLANE_KEY_CACHE_S"] = "1"
    for name, value in settings.items():
        env[f"CONTROL_PLANE_{name.upper()}"] = str(value)
    return env


@contextmanager
def replica(tmp_path: Path, name: str, database_url: str, **settings: object) -> Iterator[Replica]:
    port = free_port()
    state = tmp_path / name
    argv = [sys.executable, "-m", "control_plane", "--state-dir", str(state)]
    proc = subprocess.Popen(
        [*argv, "serve", "--port", str(port)],
        env=_env(database_url, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            proc.kill()
            _, err = proc.communicate(timeout=START_TIMEOUT_S)
            raise AssertionError(f"replica {name} did not start: {line!r} {err[-2000:]}")
        yield Replica(f"http://127.0.0.1:{port}", state)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def mint(tmp_path: Path, database_url: str, *args: str) -> str:
    """`python -m control_plane mint ...` against the shared database: a third process."""
    argv = [sys.executable, "-m", "control_plane", "--state-dir", str(tmp_path / "minter")]
    out = subprocess.run(
        [*argv, "mint", *args],
        env=_env(database_url),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


@contextmanager
def minter(tmp_path: Path, database_url: str) -> Iterator[ControlPlane]:
    """This test process as one more control plane on the database, to mint tokens as if
    long ago (past half their life, with time left)."""
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "minter-plane", public_url=PUBLIC_URL, database_url=database_url
    )
    plane = ControlPlane.open(settings)
    try:
        yield plane
    finally:
        plane.close()


def aged_callback_token(plane: ControlPlane) -> str:
    """A callback token of n1 minted 1,000 s ago with a 1,800 s life: past half of it."""
    aged = plane.tokens.with_clock(lambda: time.time() - 1000)
    return aged.mint_callback_token("n1", ttl_s=1800)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def eventually(check: Callable[[], Any], what: str) -> Any:
    """Polls `check` (async) until it returns something truthy, within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.1)


@pytest.fixture
def pair(tmp_path: Path, database_url: str) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas started at once (they migrate the empty database in turn). The first
    revokes a refreshed token after an hour, the second after a second."""
    with ExitStack() as stack:
        a = stack.enter_context(
            replica(tmp_path, "a", database_url, callback_token_revoke_grace_s=3600)
        )
        b = stack.enter_context(
            replica(tmp_path, "b", database_url, callback_token_revoke_grace_s=1)
        )
        yield a, b


def batch(node_seqs: range) -> dict[str, Any]:
    return {
        "events": [
            {"session_id": f"s{seq % 4}", "seq": seq, "ts": 1.0, "type": "acp.update", "data": {}}
            for seq in node_seqs
        ]
    }


async def test_two_replicas_on_one_database(
    tmp_path: Path, database_url: str, pair: tuple[Replica, Replica]
) -> None:
    """One pair of processes for the four properties (each process start costs seconds)."""
    a, b = pair
    with minter(tmp_path, database_url) as plane:
        callback = plane.tokens.mint_callback_token("n1")
        admin = plane.tokens.mint_user_token("ops", admin=True)
        first, second = aged_callback_token(plane), aged_callback_token(plane)
    async with a.client() as ca, b.client() as cb:
        await one_node_ca_for_both(tmp_path, database_url, ca, cb)
        await same_batches_stored_once(ca, cb, callback, admin)
        await refresh_revokes_across_replicas(ca, cb, first, second)
        await key_rotated_through_one_is_honoured_by_the_other(
            tmp_path, database_url, ca, cb, admin
        )


async def one_node_ca_for_both(
    tmp_path: Path, database_url: str, ca: httpx.AsyncClient, cb: httpx.AsyncClient
) -> None:
    """Asked at once on first use, both replicas publish one CA; a node bootstrapped through
    one of them serves a certificate that verifies, in a real TLS handshake under the node's
    name, with the CA the other publishes; so does one renewed through the other."""
    pems: dict[str, str] = {}

    async def fetch(name: str, client: httpx.AsyncClient) -> None:
        r = await client.get("/api/node-ca.pem")
        assert r.status_code == 200, r.text
        pems[name] = r.text

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch, "a", ca)
        tg.start_soon(fetch, "b", cb)
    assert pems["a"] == pems["b"] and "BEGIN CERTIFICATE" in pems["a"]

    token = "bootstrap-token-of-n2"
    with minter(tmp_path, database_url) as plane:  # the admin's node, made in the database
        provisioning_store.create_node(
            plane.engine,
            provisioning_store.NewNode(
                node_id="n2",
                hostname="n2",
                dns_name=f"n2.{DOMAIN}",
                created_at=time.time(),
                created_by="ops",
                params={},
                bootstrap_token_sha256=token_digest(token),
                bootstrap_expires_at=time.time() + 600,
            ),
        )
    key = ec.generate_private_key(ec.SECP256R1())
    r = await ca.post("/api/nodes/n2/bootstrap", json={"csr": csr_pem(key)}, headers=bearer(token))
    assert r.status_code == 200, r.text
    signed_by_a, callback = r.json()["certificate"], r.json()["callback_token"]
    r = await cb.post(
        "/api/nodes/n2/certificate", json={"csr": csr_pem(key)}, headers=bearer(callback)
    )
    assert r.status_code == 200, r.text
    signed_by_b = r.json()["certificate"]
    name = f"n2.{DOMAIN}"
    assert handshake(signed_by_a, key, pems["b"], name, tmp_path) == "ok"
    assert handshake(signed_by_b, key, pems["a"], name, tmp_path) == "ok"
    # A CA of its own (what each replica would have made without the shared row) refuses.
    own = NodeCA.generate(DOMAIN, time.time()).certificate_pem()
    assert "CERTIFICATE_VERIFY_FAILED" in handshake(signed_by_a, key, own, name, tmp_path)


async def same_batches_stored_once(
    ca: httpx.AsyncClient, cb: httpx.AsyncClient, token: str, admin: str
) -> None:
    """The same 20 batches posted through both at once: every event stored once."""
    answers: list[dict[str, int]] = []

    async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        r = await client.post("/api/nodes/n1/events", json=body, headers=bearer(token))
        assert r.status_code == 200, r.text
        answers.append(r.json())

    async with anyio.create_task_group() as tg:
        for start in range(0, 2000, 100):
            body = batch(range(start + 1, start + 101))
            tg.start_soon(post, ca, body)
            tg.start_soon(post, cb, body)
    stored = (await cb.get("/api/nodes/n1/events?limit=5000", headers=bearer(admin))).json()
    stored = stored["events"]
    assert sum(a["stored"] for a in answers) == 2000
    assert sum(a["duplicates"] for a in answers) == 2000
    assert len(stored) == 2000
    assert len({(e["session_id"], e["seq"]) for e in stored}) == 2000


async def refresh_revokes_across_replicas(
    ca: httpx.AsyncClient, cb: httpx.AsyncClient, first: str, second: str
) -> None:
    ready = {"version": "1"}
    # Refreshed through `a` (grace one hour): the old and the new token are both accepted
    # by `b`, the new one minted by `a`.
    fresh_a = await refreshed(ca, first)
    for token in (first, fresh_a):
        r = await cb.post("/api/nodes/n1/ready", json=ready, headers=bearer(token))
        assert r.status_code == 200, r.text

    # Refreshed through `b` (grace one second): `a` refuses the old one once that second
    # has passed, and takes the new one `b` minted.
    fresh_b = await refreshed(cb, second)

    async def a_refuses() -> bool:
        r = await ca.post("/api/nodes/n1/ready", json=ready, headers=bearer(second))
        if r.status_code == 200:
            return False
        assert (r.status_code, r.json()) == (401, {"error": "token revoked: a refresh replaced it"})
        return True

    await eventually(a_refuses, "the other replica to refuse the replaced token")
    r = await ca.post("/api/nodes/n1/ready", json=ready, headers=bearer(fresh_b))
    assert r.status_code == 200, r.text
    # The first refresh's grace is the first replica's: an hour, not a second.
    r = await cb.post("/api/nodes/n1/ready", json=ready, headers=bearer(first))
    assert r.status_code == 200, r.text


async def key_rotated_through_one_is_honoured_by_the_other(
    tmp_path: Path, database_url: str, ca: httpx.AsyncClient, cb: httpx.AsyncClient, admin: str
) -> None:
    r = await ca.post("/api/keys/rotate", json={"activateAfterS": 0}, headers=bearer(admin))
    assert r.status_code == 201, r.text
    kid = r.json()["kid"]

    async def b_publishes() -> bool:
        keys = (await cb.get("/.well-known/jwks.json")).json()["keys"]
        return kid in {k["kid"] for k in keys}

    await eventually(b_publishes, "the other replica to publish the rotated key")
    # Minted by another process (the mint command) with the new key: both accept it.
    user = mint(tmp_path, database_url, "user", "alice")
    assert jwt.get_unverified_header(user)["kid"] == kid
    for client in (ca, cb):
        r = await client.get("/api/defaults/platform/platform", headers=bearer(user))
        assert r.status_code == 200, r.text
    # A token the first replica mints after the rotation (a refreshed callback token) is
    # signed with the new key and accepted by the second at once.
    with minter(tmp_path, database_url) as plane:
        old = aged_callback_token(plane)
    fresh = await refreshed(ca, old)
    assert jwt.get_unverified_header(fresh)["kid"] == kid
    r = await cb.post("/api/nodes/n1/ready", json={"version": "1"}, headers=bearer(fresh))
    assert r.status_code == 200, r.text


async def refreshed(client: httpx.AsyncClient, token: str) -> str:
    """A heartbeat with `token` (past half its life): the answer carries a new one."""
    r = await client.post(
        "/api/nodes/n1/heartbeat", json={"sessions": [], "usage": {}}, headers=bearer(token)
    )
    assert r.status_code == 200, r.text
    fresh = r.json()["token"]
    assert isinstance(fresh, str)
    return fresh
