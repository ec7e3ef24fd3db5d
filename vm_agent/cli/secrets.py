"""``vm-agent secrets``: the caller's secrets for their MCP servers in the control plane
(``PUT``/``GET``/``DELETE /api/secrets``, docs/control-plane.md). A value is read from
standard input, never from the command line (shell history, ``ps``), and never printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from vm_agent.cli.task import (
    EXIT_OK,
    TOKEN_ENV,
    URL_ENV,
    TaskClient,
    TaskCommandError,
    run_with_client,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get(URL_ENV), help=f"control plane ({URL_ENV})")
    p.add_argument("--token", default=None, help=f"a user token (default: ${TOKEN_ENV})")
    p.add_argument("--ca-file", default=None, help="CA bundle for an https control plane")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    verbs = p.add_subparsers(dest="verb", required=True)
    put = verbs.add_parser("set", help="store a secret; its value is read from standard input")
    put.add_argument("name", help="1-64 of [A-Za-z0-9_.-]")
    verbs.add_parser("list", help="the names of your secrets (never their values)")
    delete = verbs.add_parser("delete", help="remove a secret")
    delete.add_argument("name")


def read_value(text: str) -> str:
    """The value as typed or piped: one trailing newline is the terminal's, not the value's."""
    return text.removesuffix("\n").removesuffix("\r")


def run(args: argparse.Namespace) -> int:
    return run_with_client("vm-agent secrets", args, _verb)


def _verb(client: TaskClient, args: argparse.Namespace) -> int:
    answer: dict[str, Any]
    if args.verb == "set":
        value = read_value(sys.stdin.read())
        if not value:
            raise TaskCommandError("no value on standard input")
        answer = client.call("PUT", f"/api/secrets/{args.name}", {"value": value})
        print(json.dumps(answer) if args.json else f"secret {args.name} stored")
    elif args.verb == "list":
        answer = client.call("GET", "/api/secrets")
        if args.json:
            print(json.dumps(answer))
        for entry in [] if args.json else answer["secrets"]:
            print(entry["name"])
    else:
        client.call("DELETE", f"/api/secrets/{args.name}", None)
        print(f"secret {args.name} deleted")
    return EXIT_OK
