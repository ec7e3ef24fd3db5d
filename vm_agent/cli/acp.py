"""``vm-agent acp``: the ACP gateway (docs/gateway.md). An ACP client launches it as its
agent; it carries the conversation to a daemon's viewer API (``--url``), or to the session
of a task the control plane says where to find (``--control-plane`` and ``--task``)."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path

import anyio

from vm_agent import __version__
from vm_agent.cli.task import TOKEN_ENV as USER_TOKEN_ENV
from vm_agent.cli.task import URL_ENV as CONTROL_PLANE_ENV
from vm_agent.cli.viewer_client import TOKEN_ENV, tls_context

EXIT_USAGE = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the viewer URL: wss://HOST:8080/v1/ws, or ws:// on loopback")
    p.add_argument(
        "--token",
        help=f"with --url: a viewer token with the write scope (default: ${TOKEN_ENV}); "
        f"with --task: a user token (default: ${USER_TOKEN_ENV})",
    )
    p.add_argument(
        "--control-plane",
        default=os.environ.get(CONTROL_PLANE_ENV),
        help=f"with --task: the control plane's URL (default: ${CONTROL_PLANE_ENV})",
    )
    p.add_argument(
        "--ca-file",
        type=Path,
        help="with a wss:// URL: trust the daemon's certificate if this CA (PEM) signed it "
        "(default: the system's CAs)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--agent", help="session/new starts a session of this catalog agent")
    which.add_argument("--session", help="session/new attaches to this existing session")
    which.add_argument(
        "--task",
        help="session/new attaches to this task's session, found through the control plane "
        "(instead of --url)",
    )
    p.add_argument(
        "--cwd",
        help="with --agent: the new sessions' directory on the VM (default: the client's cwd, "
        "which must then exist under one of the daemon's workspace roots)",
    )


def run(args: argparse.Namespace) -> int:
    if args.task is not None:
        return _run_task(args)
    if args.url is None:
        return _usage("give --url (a daemon's viewer URL) or --control-plane and --task")
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        return _usage(f"give --token or set {TOKEN_ENV}")
    if not args.url.startswith(("ws://", "wss://")):
        return _usage("--url must be a ws:// or wss:// URL")
    if args.ca_file is not None and not args.url.startswith("wss://"):
        return _usage("--ca-file goes with a wss:// URL")
    if args.cwd is not None and args.agent is None:
        return _usage("--cwd goes with --agent")
    if args.cwd is not None and not args.cwd.startswith("/"):
        return _usage("--cwd must be an absolute path on the VM")
    tls = None
    if args.url.startswith("wss://"):
        try:
            tls = tls_context(args.ca_file)
        except (OSError, ssl.SSLError) as exc:
            return _usage(f"--ca-file {args.ca_file}: {exc}")
    from vm_agent.gateway.agent import Options
    from vm_agent.gateway.serve import serve

    options = Options(version=__version__, agent=args.agent, cwd=args.cwd, session=args.session)
    return anyio.run(lambda: serve(options, url=args.url, token=token, tls=tls))


def _run_task(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(USER_TOKEN_ENV)
    if args.url is not None or args.ca_file is not None or args.cwd is not None:
        return _usage("--task finds the daemon through the control plane: no --url/--ca-file/--cwd")
    if not args.control_plane:
        return _usage(f"--task needs --control-plane (or ${CONTROL_PLANE_ENV})")
    if not args.control_plane.startswith(("http://", "https://")):
        return _usage("--control-plane must be an http:// or https:// URL")
    if not token:
        return _usage(f"--task needs a user token: give --token or set {USER_TOKEN_ENV}")
    from vm_agent.gateway.agent import Options
    from vm_agent.gateway.serve import serve_task

    options = Options(version=__version__)
    return anyio.run(
        lambda: serve_task(
            options, control_plane=args.control_plane, user_token=token, task=args.task
        )
    )


def _usage(message: str) -> int:
    print(f"vm-agent acp: {message}", file=sys.stderr)
    return EXIT_USAGE
