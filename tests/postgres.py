"""The tests' PostgreSQL server: its URL, and a fresh schema for each test.

`.ci/postgres start` runs the server (its own cluster, loopback only) and prints the URL;
CI exports it as VM_AGENT_TEST_POSTGRES_URL. Without it, PostgreSQL tests skip with the
reason, and fail under CI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests.capabilities import missing

POSTGRES_URL_ENV = "VM_AGENT_TEST_POSTGRES_URL"


def where(url: str) -> str:
    """host:port/db of `url`, for messages (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}{parts.path}"


def postgres_url() -> str:
    """The server's libpq URL; skips (fails under CI) when it is not set or not reachable."""
    url = os.environ.get(POSTGRES_URL_ENV, "")
    if not url:
        missing(f"{POSTGRES_URL_ENV} is not set (`.ci/postgres start` prints it)")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        missing(f"PostgreSQL at {where(url)} is not reachable: {type(exc).__name__}")
    return url


def with_search_path(url: str, schema: str) -> str:
    """`url` whose connections use `schema` (tables, alembic_version and all)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new, empty schema for one test; yields the URL that uses it; drops it after."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield with_search_path(url, name)
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
