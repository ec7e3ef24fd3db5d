"""A PostgreSQL server for the benchmarks that need one, so `make bench` needs no setup.

The one ``VM_AGENT_TEST_POSTGRES_URL`` names, when set (CI's, or yours); otherwise one of
the benchmark's own on loopback, stopped when it is done: as root through ``.ci/postgres``
(its own directory and port, beside the tests' server), as anyone else a throwaway cluster
in a temporary directory from the installed PostgreSQL binaries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

URL_ENV = "VM_AGENT_TEST_POSTGRES_URL"
REPO = Path(__file__).resolve().parents[1]
BENCH_PORT = "55433"  # beside the tests' 55432
BENCH_ROOT = "/var/tmp/vm-agent-bench-pg"


class NoPostgres(RuntimeError):
    pass


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _as_root() -> Iterator[str]:
    env = {**os.environ, "VM_AGENT_TEST_PG_PORT": BENCH_PORT, "VM_AGENT_TEST_PG_ROOT": BENCH_ROOT}
    script = str(REPO / ".ci" / "postgres")
    done = subprocess.run([script, "start"], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NoPostgres(f".ci/postgres start failed: {done.stderr.strip()[-500:]}")
    try:
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, check=False)


@contextlib.contextmanager
def _throwaway() -> Iterator[str]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise NoPostgres(f"no PostgreSQL here: install it (Debian: postgresql) or export {URL_ENV}")
    base = Path(tempfile.mkdtemp(prefix="vm-agent-bench-pg-"))
    data, port = base / "data", _free_port()

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, text=True)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--auth=trust")  # fmt: skip
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
            "-t", "60", "-o", f"-c listen_addresses=127.0.0.1 -c port={port} "
            f"-c unix_socket_directories={base}", "start")  # fmt: skip
        try:
            run(str(bin_dir / "createdb"), "-h", str(base), "-p", str(port), "-U", "postgres",
                "bench")  # fmt: skip
            yield f"postgresql://postgres@127.0.0.1:{port}/bench"
        finally:
            subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast",
                            "stop"], capture_output=True, check=False)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise NoPostgres(f"{Path(exc.cmd[0]).name} failed: {exc.stderr.strip()[-500:]}") from exc
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    """A URL of a running PostgreSQL server for the length of the block."""
    url = os.environ.get(URL_ENV, "")
    if url:
        yield url
    elif os.geteuid() == 0:
        with _as_root() as url:
            yield url
    else:
        with _throwaway() as url:
            yield url


def _in_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    return urlunsplit(
        parts._replace(query=urlencode([*query, ("options", f"-csearch_path={schema}")]))
    )


@contextlib.contextmanager
def schema_of_its_own(url: str) -> Iterator[str]:
    """A schema of the benchmark's own for this run, dropped after; yields its URL."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    ident = sql.Identifier(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    try:
        yield _in_schema(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
