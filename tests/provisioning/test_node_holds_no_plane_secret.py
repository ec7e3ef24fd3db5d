"""What a node is given holds none of the control plane's secrets (threat model: someone
holding a node's callback token cannot reach a cloud provider's API, or act as the plane).

The control plane runs with every secret it can hold set: a provider's and a cloud's
credentials in its environment, agent credentials in its settings and its secrets file,
the database's password (on PostgreSQL), its signing keys and node CA key in the database.
Then a node is made, and everything a node gets is searched for each of them: the rendered
user-data, the files the real bootstrap leaves, and every byte the control plane answered
the node's own calls (bootstrap, ready, heartbeat, a credentials request for a session it
was not given), recorded by a forwarder on loopback between the two. Positive controls
show the search sees what it looks for: the bootstrap token is in the user-data, the
callback token in the recorded answers.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from control_plane.app import bind_socket
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import node_ca
from tests.cloud_init.helpers import files_by_path
from tests.postgres import fresh_schema, postgres_url
from tests.provisioning.fixtures import BuiltArtifacts
from tests.provisioning.plane import DOMAIN, serve
from tests.provisioning.test_bootstrap_exchange import bootstrapper, files
from tests.token_files import write_token
from vm_agent.control_link.client import CallbackError, ControlPlaneClient, RetryPolicy

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'control-plane.db'}"
        return
    with fresh_schema(postgres_url()) as url:
        yield url


def _secret(name: str) -> str:
    return f"{name}{secrets.token_hex(16)}"


@asynccontextmanager
async def recording_forwarder(port: int, received: bytearray) -> AsyncIterator[str]:
    """http://127.0.0.1:P that forwards to the plane's port and keeps what came back."""

    async def pump(src: SocketStream, dst: SocketStream, keep: bool) -> None:
        try:
            async for data in src:
                if keep:
                    received.extend(data)
                await dst.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await dst.aclose()

    async def handle(client: SocketStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", port)
        async with client, upstream, anyio.create_task_group() as tg:
            tg.start_soon(pump, client, upstream, False)
            tg.start_soon(pump, upstream, client, True)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
        tg.cancel_scope.cancel()


def _key_forms(pem: str) -> dict[str, str]:
    """A private key as it could be leaked: its PEM body, raw bytes in base64(url) and hex."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    body = "".join(line for line in pem.strip().splitlines() if "-----" not in line)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    forms = {"pem body": body, "der hex": der.hex(), "pem first line": pem.splitlines()[1]}
    try:
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    except ValueError:  # an EC key: its scalar
        raw = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    forms["raw b64url"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    forms["raw b64"] = base64.b64encode(raw).decode()
    forms["raw hex"] = raw.hex()
    return forms


async def test_nothing_a_node_gets_holds_a_control_plane_secret(
    tmp_path: Path,
    artifacts: BuiltArtifacts,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted = {
        "HCLOUD_TOKEN": _secret("hcloud"),
        "AWS_SECRET_ACCESS_KEY": _secret("aws"),
        "GOOGLE_APPLICATION_CREDENTIALS_JSON": _secret("gcp"),
        "GITHUB_APP_PRIVATE_KEY": _secret("ghapp"),
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    agent_env, agent_file = _secret("anthropic"), _secret("openai")
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"codex": {"OPENAI_API_KEY": agent_file}}))
    secrets_file.chmod(0o600)
    sock = bind_socket()
    settings = ControlPlaneSettings(
        state_dir=tmp_path / "cp",
        public_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
        artifacts_dir=artifacts.directory,
        node_domain=DOMAIN,
        key_activation_delay_s=0,
        database_url=database_url,
        secrets_file=secrets_file,
        agent_secrets={"claude": {"ANTHROPIC_API_KEY": agent_env}},  # type: ignore[dict-item]
    )
    received = bytearray()
    async with serve(sock, settings) as cp:
        plane = cp.plane
        answer = await cp.http.post("/api/nodes", json={"node_id": "node-1"}, headers=cp.admin())
        assert answer.status_code == 201, answer.text
        user_data = answer.json()["user_data"]
        bootstrap_token = files_by_path(user_data)["/etc/vm-agent/bootstrap-token"]["content"]
        where = files(tmp_path / "node")
        write_token(where.bootstrap_token, str(bootstrap_token).strip())
        async with recording_forwarder(int(sock.getsockname()[1]), received) as url:
            store = await bootstrapper(url, where).run()
            once = RetryPolicy(attempts=1)
            async with ControlPlaneClient(url, "node-1", store, retry=once) as client:
                await client.ready("0.1.0", {"cpus": 2, "mem_total_bytes": 2**31})
                await client.heartbeat([], {})
                with pytest.raises(CallbackError):
                    await client.agent_credentials("s-not-given", "claude")
        with plane.engine.connect() as conn:
            ca_pem = conn.execute(select(node_ca.c.key_pem)).scalar_one()
        keys = plane.tokens.keys.published()
        assert keys
        for key in keys:
            assert key.private_key  # what signs the tokens, admin's too
        searched: dict[str, str] = {**planted, "agent (env)": agent_env, "agent (file)": agent_file}
        if "@" in database_url:
            password = database_url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
            assert password
            searched["database password"] = password
        for name, form in _key_forms(ca_pem).items():
            searched[f"node CA key, {name}"] = form
        for key in keys:
            pem = key.to_json()["private_key_pem"]
            for name, form in _key_forms(pem).items():
                searched[f"signing key {key.kid}, {name}"] = form

    node_files = {p.name: p.read_text() for p in (tmp_path / "node").rglob("*") if p.is_file()}
    answers = received.decode("utf-8", "replace")
    # The search sees what is there: the bootstrap token in the user-data, the callback token
    # (and the node's certificate) in the answers.
    assert str(bootstrap_token).strip() in user_data
    callback_token = where.callback_token.read_text().strip()
    assert callback_token in answers
    assert callback_token not in user_data
    assert "BEGIN CERTIFICATE" in answers and '"interval_s"' in answers
    places = {"user-data": user_data, "the answers": answers, **node_files}
    found = [
        f"{what} in {place}"
        for what, value in searched.items()
        for place, text in places.items()
        if value in text
    ]
    assert found == []
