"""Hostile input at every route of the control plane: never a 500, never anything stored.

The routes come from the Starlette app itself, so a route added later is attacked too.
Each request goes with an admin's token, then (if that is refused as the wrong kind of
token) with node n1's callback token, so the body gets past authentication to the parser.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette
from starlette.routing import Route

from control_plane.app import create_app, serve_control_plane
from control_plane.settings import ControlPlaneSettings
from control_plane.storage.db import metadata
from tests.control_plane.harness import Running

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DEEP = 5000
HOSTILE_BODIES: dict[str, bytes] = {
    "nested arrays": b"[" * DEEP + b"]" * DEEP,
    "nested objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "NaN": b'{"version": "1", "x": NaN, "capacity": {"cpus": NaN}}',
    "Infinity": b'{"activateAfterS": Infinity, "requirements": {"minVcpu": Infinity}}',
    "-Infinity": b'{"x": -Infinity}',
    "a double that overflows": b'{"x": 1e400}',
    "an integer past 64 bits": b'{"expectedVersion": 9223372036854775808, "x": 1}',
    "5,000 digits": b'{"x": ' + b"9" * 5000 + b"}",
    "invalid UTF-8": b'{"x": "\xff\xfe"}',
    "not JSON": b"{'x': 1",
    "a list": b"[1, 2]",
    "null": b"null",
    "a NUL in a string": (
        b'{"agent": "a\\u0000b", "version": "\\u0000", "csr": "\\u0000",'
        b' "events": [{"session_id": "s\\u0000", "seq": 1, "ts": 1, "type": "t"}]}'
    ),
}
# JSON every route may refuse, but routes that relay what agents and viewers chose (a
# heartbeat's session ids, an event's data) may take: never a 500, though.
MAY_BE_RELAYED = {"a NUL in a string", "an integer past 64 bits"}
HOSTILE_QUERY = {
    "version": "99999999999999999999",
    "limit": "99999999999999999999",
    "after": "99999999999999999999999.s",
    "session_id": "\x00",
}
HOSTILE_PATH_VALUES = ["\x00", "x" * 5000, "%", "..", "²", "a\nb"]
TRACEBACK = re.compile(r"Traceback|File \"", re.IGNORECASE)


@asynccontextmanager
async def serving(settings: ControlPlaneSettings) -> AsyncIterator[tuple[Starlette, Running]]:
    app = create_app(settings)
    plane = app.state.plane
    try:
        async with (
            serve_control_plane(settings, app=app) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            yield app, Running(url, plane, client)
    finally:
        plane.close()


def _routes(app: Starlette) -> Iterator[tuple[str, str, list[str]]]:
    for route in app.routes:
        assert isinstance(route, Route)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            yield route.path, method, list(route.param_convertors)


def _fill(path: str, params: list[str], value: str) -> str:
    for name in params:
        path = path.replace("{" + name + "}", value)
    return path


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }


@dataclass
class Attacker:
    """Sends as an admin, then (on a 403: a route for another kind of token) as node n1;
    each token is minted once, so the ledger's rows stay as they were."""

    cp: Running
    admin: dict[str, str]
    node: dict[str, str]
    node_routes: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, cp: Running) -> Attacker:
        cp.plane.node_ca  # noqa: B018 (made on first use: before the rows are counted)
        return cls(cp, cp.admin(), cp.callback("n1"))

    async def send(
        self, method: str, url: str, *, content: bytes | None = None, **kw: Any
    ) -> httpx.Response:
        json_type = {"Content-Type": "application/json"}
        client = self.cp.client
        key = f"{method} {url}"
        token = self.node if key in self.node_routes else self.admin
        r = await client.request(method, url, content=content, headers=token | json_type, **kw)
        if r.status_code == 403 and token is self.admin:
            self.node_routes.add(key)
            r = await client.request(
                method, url, content=content, headers=self.node | json_type, **kw
            )
        return r


def _refused_cleanly(r: httpx.Response, what: str) -> None:
    # 503 is the one 5xx a route means: POST /api/nodes without artifacts to provision from.
    meant = r.status_code == 503 and "no artifacts" in r.json()["error"]
    assert r.status_code < 500 or meant, f"{what}: {r.status_code} {r.text[:300]}"
    assert not TRACEBACK.search(r.text), f"{what}: {r.text[:300]}"


async def test_hostile_bodies_at_every_route(settings: ControlPlaneSettings) -> None:
    async with serving(settings) as (app, cp):
        await cp.ready("n1")
        attacker = Attacker.of(cp)
        before = _counts(cp.plane.engine)
        attacked = 0
        for path, method, params in _routes(app):
            url = _fill(path, params, "n1")
            # A GET reads no body: one hostile body shows it is not parsed either.
            bodies = list(HOSTILE_BODIES.items())[: 1 if method == "GET" else None]
            for name, body in bodies:
                r = await attacker.send(method, url, content=body)
                _refused_cleanly(r, f"{method} {path} with {name}")
                if method in ("POST", "PUT", "PATCH") and name not in MAY_BE_RELAYED:
                    assert 400 <= r.status_code < 500, f"{method} {path} took {name}: {r.text}"
                    attacked += 1
        assert attacked >= 10 * (
            len(HOSTILE_BODIES) - len(MAY_BE_RELAYED)
        )  # the JSON routes were all reached
        # Nothing stored by any of it (a rotation once stored a key, then failed).
        assert _counts(cp.plane.engine) == before


async def test_hostile_query_and_path_values_at_every_route(
    settings: ControlPlaneSettings,
) -> None:
    async with serving(settings) as (app, cp):
        await cp.ready("n1")
        attacker = Attacker.of(cp)
        before = _counts(cp.plane.engine)
        for path, method, params in _routes(app):
            url = _fill(path, params, "n1")
            r = await attacker.send(method, url, content=b"{}", params=HOSTILE_QUERY)
            _refused_cleanly(r, f"{method} {path}?{HOSTILE_QUERY}")
            for value in HOSTILE_PATH_VALUES if params else []:
                hostile = _fill(path, params, quote(value, safe=""))
                r = await attacker.send(method, hostile, content=b"{}")
                _refused_cleanly(r, f"{method} {path} with {value[:10]!r}")
        # `{}` is a valid heartbeat of n1 (it updates the row it has): no new rows.
        assert _counts(cp.plane.engine) == before
