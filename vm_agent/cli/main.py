"""The ``vm-agent`` command line: one sub-command per job."""

from __future__ import annotations

import argparse
import logging
import sys

from vm_agent import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vm-agent", description="Supervisor for ACP agents.")
    parser.add_argument("--version", action="version", version=f"vm-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    from vm_agent.cli import acp, agent_users, attach, dev, prompt, secrets, serve, task

    prompt.add_arguments(sub.add_parser("prompt", help="run one prompt against one agent"))
    serve.add_arguments(sub.add_parser("serve", help="run the daemon (configured by VM_AGENT_*)"))
    dev.add_arguments(
        sub.add_parser("dev", help="run the control plane and the daemon together on loopback")
    )
    attach.add_arguments(
        sub.add_parser("attach", help="a terminal viewer: stream a session, send a prompt")
    )
    agent_users.add_arguments(
        sub.add_parser("agent-users", help="the agent-user pool (`ensure` creates it)")
    )
    task.add_arguments(
        sub.add_parser("task", help="submit a task to the control plane and follow it")
    )
    secrets.add_arguments(
        sub.add_parser("secrets", help="your secrets for MCP servers in the control plane")
    )
    acp.add_arguments(sub.add_parser("acp", help="the ACP gateway: be a remote session's agent"))
    sub.add_parser("fake-agent", help="the fake ACP agent (for dev and tests)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["fake-agent"]:
        # The fake agent parses its own flags and imports little, to start fast.
        from vm_agent.fake_agent import main as fake_main

        return fake_main(args_list[1:])
    args = _parser().parse_args(args_list)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command == "prompt":
        from vm_agent.cli import prompt

        return prompt.run(args)
    if args.command == "serve":
        from vm_agent.cli import serve

        return serve.run(args)
    if args.command == "dev":
        from vm_agent.cli import dev

        return dev.run(args)
    if args.command == "agent-users":
        from vm_agent.cli import agent_users

        return agent_users.run(args)
    if args.command == "task":
        from vm_agent.cli import task

        return task.run(args)
    if args.command == "attach":
        from vm_agent.cli import attach

        return attach.run(args)
    if args.command == "secrets":
        from vm_agent.cli import secrets

        return secrets.run(args)
    if args.command == "acp":
        from vm_agent.cli import acp

        return acp.run(args)
    return 2  # pragma: no cover - argparse enforces the choices
