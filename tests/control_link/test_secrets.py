"""Agent credentials reach that agent's environment and nowhere else; the callback token
reaches no agent, no log line, no crash report, no event."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.token_files import write_token
from vm_agent.common.redact import Redactor
from vm_agent.control_link import CallbackTokenStore, ControlLink
from vm_agent.core.vocabulary import SessionState
from vm_agent.eventlog import EventLog
from vm_agent.process.agent_env import DEFAULT_ALLOWED
from vm_agent.process.catalog import AgentSpec, Catalog, fake_agent_command
from vm_agent.session.config import SessionConfig
from vm_agent.session.supervisor import Supervisor

from .harness import FAST_TIMINGS, control_plane, daemon_settings
from .test_link import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

API_KEY = "sk-test-" + "k3y" * 10
UNDECLARED = "undeclared-" + "z" * 20
GATEWAY = "http://model-gateway.internal:8765"


def _daemon_env(token: str) -> dict[str, str]:
    """What a daemon's own environment might hold: the token must not pass from here."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(Path.home()),
        "LANG": "C.UTF-8",
        "VM_AGENT_CALLBACK_TOKEN": token,
        "CALLBACK_TOKEN": token,
        "AWS_SECRET_ACCESS_KEY": "provider-secret-should-not-pass",
    }


def _proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def _chat_text(events: list[Any]) -> str:
    parts = []
    for event in events:
        if event.type == "acp.update":
            update = event.data["update"]
            if update.get("sessionUpdate") == "agent_message_chunk":
                parts.append(update["content"]["text"])
    return "".join(parts)


async def test_credentials_reach_the_agent_env_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vm_agent")
    store = {"FAKE_API_KEY": API_KEY, "FAKE_BASE_URL": GATEWAY, "EXTRA_SECRET": UNDECLARED}
    secrets = json.dumps({"fake-env": store})
    spec = AgentSpec(
        name="fake-env",
        command=fake_agent_command("--scenario", "env"),
        credentials=("FAKE_API_KEY",),
        # one the store has, one it has not (no warning for that one)
        optional_credentials=("FAKE_BASE_URL", "FAKE_ORG"),
    )
    async with control_plane(tmp_path, secrets=secrets) as cp, cp.serving() as url:
        settings = daemon_settings(tmp_path, url)
        token = cp.callback_token()
        redactor = Redactor()
        tokens = CallbackTokenStore.load(
            write_token(settings.callback_token_file, token), redactor=redactor
        )
        work = tmp_path / "work"
        work.mkdir()
        async with EventLog.open(settings.event_log_path) as log:
            supervisor = Supervisor(
                log=log,
                catalog=Catalog({"fake-env": spec}),
                config=SessionConfig(daemon_env=_daemon_env(token)),
                redactor=redactor,
            )
            link = ControlLink(
                settings, log, supervisor, tokens, redactor=redactor, timings=FAST_TIMINGS
            )
            supervisor.credentials = link.credentials_provider
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                await tg.start(link.run)
                made = cp.make_session("fake-env")  # the control plane knows the session
                session = await supervisor.start_session("fake-env", work, session_id=made)
                assert await session.wait_settled() is SessionState.READY
                assert session.agent_pid is not None
                proc_env = _proc_environ(session.agent_pid)
                await log.flush()
                # Nothing the daemon wrote so far holds the key (it is never written to disk).
                on_disk = b"".join(
                    p.read_bytes() for p in settings.state_dir.rglob("*") if p.is_file()
                )
                assert API_KEY.encode() not in on_disk
                assert token.encode() not in on_disk
                outcome = await session.prompt("p1", [{"type": "text", "text": "env"}])
                assert outcome.outcome == "completed"
                printed = json.loads(_chat_text(await log.read(session.id)))
                # A session id the daemon made up: the control plane never made it, so
                # the agent gets no credentials and is not started.
                stranger = await supervisor.start_session("fake-env", work)
                assert await stranger.wait_settled() is SessionState.ERROR
                refused, stranger_pid = stranger.describe()["error"], stranger.agent_pid
                await supervisor.shutdown(5)
                tg.cancel_scope.cancel()
    assert refused is not None and "agent credentials unavailable" in refused, refused
    assert stranger_pid is None and API_KEY not in refused
    for env in (proc_env, printed):
        assert env["FAKE_API_KEY"] == API_KEY
        assert env["FAKE_BASE_URL"] == GATEWAY
        assert token not in env.values()
        assert "EXTRA_SECRET" not in env  # only what the catalog declares for the agent
        outside = set(env) - set(DEFAULT_ALLOWED) - {"FAKE_API_KEY", "FAKE_BASE_URL"}
        # Python itself may add a few of its own (e.g. LC_CTYPE coercion) when it starts.
        assert outside <= {"LC_CTYPE", "PYTHONIOENCODING"}, outside
    assert "AWS_SECRET_ACCESS_KEY" not in proc_env
    assert "FAKE_ORG" not in caplog.text  # an optional one the store lacks is no warning
    assert "EXTRA_SECRET" in caplog.text  # one the catalog does not declare is
    # The key is now a secret to the redactor as well.
    assert API_KEY not in redactor.redact(f"key {API_KEY}")


async def test_the_callback_token_never_reaches_logs_crash_reports_or_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "vm_agent", "control_plane", "uvicorn"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    async with control_plane(tmp_path) as cp, cp.serving() as url:
        settings = daemon_settings(tmp_path, url)
        old = cp.callback_token(age_s=400)  # refreshed at the first heartbeat
        redactor = Redactor()
        tokens = CallbackTokenStore.load(
            write_token(settings.callback_token_file, old), redactor=redactor
        )
        # An agent that leaks what it was given on stderr, then crashes mid-prompt: its
        # stderr tail lands in the crash report (it was never given the token: this one
        # got it on its command line, as a worst case).
        crash = AgentSpec(
            name="leaky",
            command=fake_agent_command(
                "--scenario", "crash-mid-prompt", "--stderr-text", f"my token is {old}"
            ),
        )
        catalog = Catalog({"leaky": crash, "fake": Catalog.load().get("fake")})
        async with EventLog.open(settings.event_log_path) as log:
            supervisor = Supervisor(
                log=log,
                catalog=catalog,
                config=SessionConfig(daemon_env=_daemon_env(old)),
                redactor=redactor,
            )
            link = ControlLink(
                settings, log, supervisor, tokens, redactor=redactor, timings=FAST_TIMINGS
            )
            supervisor.credentials = link.credentials_provider
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                await tg.start(link.run)
                await wait_for(lambda: link.token_refreshes >= 1)
                new = tokens.value
                ok = await supervisor.start_session("fake", tmp_path)
                await ok.wait_settled()
                await ok.prompt("p1", [{"type": "text", "text": "hello there"}])
                leaky = await supervisor.start_session("leaky", tmp_path)
                await leaky.wait_settled()
                outcome = await leaky.prompt("p2", [{"type": "text", "text": "crash now"}])
                await wait_for(lambda: bool(leaky.crash_reports))
                await log.flush()
                await wait_for(lambda: link.outbox.depth == 0)
                reports = [r.model_dump_json() for r in leaky.crash_reports]
                events = [e.payload for s in (ok, leaky) for e in await log.read(s.id)]
                await supervisor.shutdown(5)
                tg.cancel_scope.cancel()
        stored = json.dumps(await cp.events())
    assert outcome.outcome in ("crashed", "failed")
    assert new != old
    assert stored.count('"prompt.finished"') == 2  # the events did go to the control plane
    lines = [caplog.text]
    lines += [r.getMessage() for r in caplog.records]
    lines += [str(r.args) for r in caplog.records]
    log_text = "\n".join(lines)
    assert "HTTP Request: POST" in log_text  # httpx's own lines were captured
    files = b"".join(p.read_bytes() for p in settings.state_dir.rglob("*") if p.is_file())
    for token in (old, new):
        assert token not in log_text
        assert all(token not in r for r in reports)
        assert all(token not in e for e in events)
        assert token not in stored
        assert token.encode() not in files
    assert any("[REDACTED]" in r for r in reports)  # the leak was there, and redacted
