"""The run of ``vm-agent prompt``: a supervisor, a session and a throwaway event log."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from vm_agent.acp.permissions import AllowPolicy, RejectPolicy
from vm_agent.cli.render import HumanRenderer
from vm_agent.common.redact import Redactor
from vm_agent.core.machine import SessionPolicy
from vm_agent.core.vocabulary import OutcomeKind, SessionState
from vm_agent.eventlog import EventLog
from vm_agent.process.catalog import AgentSpec, Catalog, CatalogError
from vm_agent.session.config import CredentialsProvider, SessionConfig
from vm_agent.session.supervisor import Supervisor

CUSTOM = "custom"
PROMPT_ID = "cli-prompt-1"
START_TIMEOUT_VAR = "VM_AGENT_START_TIMEOUT_S"


def _spec(args: argparse.Namespace) -> tuple[Catalog, str]:
    if args.agent_command:
        argv = shlex.split(args.agent_command)
        if not argv:
            raise CatalogError("--agent-command is empty")
        return Catalog({CUSTOM: AgentSpec(name=CUSTOM, command=tuple(argv))}), CUSTOM
    catalog = Catalog.load(args.agents_file)
    catalog.get(args.agent)
    return catalog, args.agent


def start_timeout(flag: float | None, environ: Mapping[str, str]) -> float:
    """``--start-timeout``, else ``VM_AGENT_START_TIMEOUT_S``, else the daemon's default."""
    if flag is not None:
        return flag
    raw = environ.get(START_TIMEOUT_VAR)
    if raw is None:
        return SessionConfig().start_timeout_s
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise CatalogError(f"{START_TIMEOUT_VAR}: must be a positive number of seconds: {raw!r}")
    return value


def caller_credentials(environ: Mapping[str, str]) -> CredentialsProvider:
    """Without a daemon there is no control plane: the variables a catalog entry names as
    its credentials come from the caller's own environment (only those, only if set)."""

    async def fetch(session_id: str, spec: AgentSpec) -> Mapping[str, str]:
        return {name: environ[name] for name in spec.credential_names if name in environ}

    return fetch


def run(args: argparse.Namespace) -> int:
    try:
        catalog, agent = _spec(args)
        args.start_timeout = start_timeout(args.start_timeout, os.environ)
    except CatalogError as exc:
        print(f"vm-agent prompt: {exc}", file=sys.stderr)
        return 2
    cwd = args.cwd.resolve()
    if not cwd.is_dir():
        print(f"vm-agent prompt: --cwd {cwd} is not a directory", file=sys.stderr)
        return 2
    return anyio.run(_run, args, catalog, agent, cwd)


async def _run(args: argparse.Namespace, catalog: Catalog, agent: str, cwd: Path) -> int:
    renderer = HumanRenderer()

    def show(events: Any) -> None:
        for event in events:
            if args.json:
                print(event.payload, flush=True)
            else:
                renderer.event(event.params())

    config = SessionConfig(
        policy=SessionPolicy(prompt_timeout_s=args.timeout), start_timeout_s=args.start_timeout
    )
    policy = AllowPolicy if args.permission == "allow" else RejectPolicy
    with tempfile.TemporaryDirectory(prefix="vm-agent-prompt-") as tmp:
        async with EventLog.open(Path(tmp) / "events.sqlite3") as log:
            log.add_listener(show)
            supervisor = Supervisor(
                log=log,
                catalog=catalog,
                config=config,
                redactor=Redactor(),
                credentials=caller_credentials(os.environ),
                permission_policy=policy,
            )
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                outcome = await _one_prompt(supervisor, agent, cwd, args.text, tg)
                await supervisor.shutdown(10.0)
                tg.cancel_scope.cancel()  # the Ctrl-C watcher
            await log.flush()
    if args.json:
        print(json.dumps(outcome), flush=True)
    else:
        renderer.outcome(outcome)
    return 0 if outcome["outcome"] == OutcomeKind.COMPLETED else 1


async def _one_prompt(
    supervisor: Supervisor, agent: str, cwd: Path, text: str, tg: Any
) -> dict[str, Any]:
    session = await supervisor.start_session(agent, cwd)
    state = await session.wait_settled()
    if state is not SessionState.READY:
        # auth_required, timeout (the start deadline) or failed, with the agent's words
        not_started = session.start_outcome(PROMPT_ID)
        if not_started is not None:
            return not_started.to_json()
        return {
            "outcome": "failed",
            "session_id": session.id,
            "reason": f"the session is {state.value}",
        }
    tg.start_soon(_cancel_on_interrupt, session)
    blocks = [{"type": "text", "text": text}]
    outcome = await session.prompt(PROMPT_ID, blocks)
    return outcome.to_json()


async def _cancel_on_interrupt(session: Any) -> None:
    # First Ctrl-C asks the agent to cancel; a second one stops the session.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for _ in signals:
            count += 1
            if count == 1:
                print("-- cancelling (Ctrl-C again to stop)", file=sys.stderr)
                await session.cancel()
            else:
                await session.stop()
