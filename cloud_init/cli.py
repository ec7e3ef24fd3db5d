"""``python -m cloud_init render ...``: user-data on stdout or in a 0600 file.

Bad input exits with status 2 and one line naming the flag (or environment variable).
The bootstrap token is read from a file so it never shows in ``ps``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from cloud_init.params import (
    SWAP_SIZE_MB_MAX,
    SWAPPINESS_MAX,
    InvalidParameter,
    SwapSettings,
    number_from_text,
    params_from_env,
    validate_params,
)
from cloud_init.render import UserDataTooLarge, render

EXIT_BAD_INPUT = 2
EXIT_TOO_LARGE = 1
_FLAGS = {
    "bootstrap_token": "--bootstrap-token-file",
    "wheelhouse": "--wheelhouse-url",
    "wheelhouse.url": "--wheelhouse-url",
    "wheelhouse.sha256": "--wheelhouse-sha256",
    "agents": "--agents-bundle-url",
    "agents.bundle.url": "--agents-bundle-url",
    "agents.bundle.sha256": "--agents-bundle-sha256",
    "agents.names": "--agents",
    "ca_certificate": "--ca-file",
    "swap.size_mb": "--swap-size-mb",
    "swap.swappiness": "--swap-swappiness",
}


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and the caller chooses the exit status."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            # Not echoed: a mistyped flag may be followed by a secret.
            message = "unrecognized arguments (not repeated here)"
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    # No abbreviations: "--bootstrap-token" must not quietly mean "--bootstrap-token-file".
    parser = _Parser(
        prog="python -m cloud_init", description="Render vm-agent user-data.", allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser(
        "render", help="print #cloud-config user-data", allow_abbrev=False
    )
    required = render_cmd.add_argument_group("required")
    required.add_argument("--node-id", required=True)
    required.add_argument("--hostname", required=True)
    required.add_argument("--control-plane-url", required=True)
    required.add_argument("--jwks-url", required=True)
    required.add_argument("--bootstrap-token-file", required=True, type=Path)
    required.add_argument("--wheelhouse-url", required=True, help="on the control plane")
    required.add_argument("--wheelhouse-sha256", required=True)
    render_cmd.add_argument("--agents", help="comma-separated catalog names (needs the bundle)")
    render_cmd.add_argument("--agents-bundle-url")
    render_cmd.add_argument("--agents-bundle-sha256")
    render_cmd.add_argument(
        "--ca-file", type=Path, help="PEM of the CA the VM must trust for the control plane"
    )
    render_cmd.add_argument("--port", default="8080")
    render_cmd.add_argument("--swap-size-mb", help="0..65536, 0 disables (env SWAP_SIZE_MB)")
    render_cmd.add_argument("--swap-swappiness", help="0..100 (env SWAP_SWAPPINESS)")
    render_cmd.add_argument("--output", type=Path, help="write here (mode 0600), not stdout")
    return parser


def _read_text(path: Path, flag: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidParameter(flag, f"cannot read: {exc.strerror}") from None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidParameter(flag, "is not ASCII") from None


def _agents(args: argparse.Namespace) -> dict[str, object] | None:
    given = [args.agents, args.agents_bundle_url, args.agents_bundle_sha256]
    if all(value is None for value in given):
        return None
    if any(value is None for value in given):
        raise InvalidParameter(
            "--agents", "--agents, --agents-bundle-url and --agents-bundle-sha256 go together"
        )
    return {
        "bundle": {"url": args.agents_bundle_url, "sha256": args.agents_bundle_sha256},
        "names": tuple(name for name in args.agents.split(",") if name),
    }


def _swap(args: argparse.Namespace, env: Mapping[str, str]) -> SwapSettings:
    from_env = params_from_env(env)
    size, swappiness = from_env.size_mb, from_env.swappiness
    if args.swap_size_mb is not None:
        size = number_from_text("--swap-size-mb", args.swap_size_mb, SWAP_SIZE_MB_MAX)
    if args.swap_swappiness is not None:
        swappiness = number_from_text("--swap-swappiness", args.swap_swappiness, SWAPPINESS_MAX)
    return SwapSettings(size_mb=size, swappiness=swappiness)


def _port(text: str) -> int:
    return number_from_text("--port", text, 65535, low=1)


def _write_private(path: Path, text: str) -> None:
    """Atomically, and 0600 from the first byte: the document holds the bootstrap token."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
        token = _read_text(args.bootstrap_token_file, "--bootstrap-token-file")
        params = validate_params(
            {
                "node_id": args.node_id,
                "hostname": args.hostname,
                "control_plane_url": args.control_plane_url,
                "jwks_url": args.jwks_url,
                "bootstrap_token": token.removesuffix("\n"),
                "wheelhouse": {"url": args.wheelhouse_url, "sha256": args.wheelhouse_sha256},
                "agents": _agents(args),
                "port": _port(args.port),
                "swap": _swap(args, env),
                "ca_certificate": None
                if args.ca_file is None
                else _read_text(args.ca_file, "--ca-file"),
            }
        )
        text = render(params)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InvalidParameter as exc:
        flag = _FLAGS.get(exc.field, exc.field)
        if not flag.startswith("--") and not flag.isupper():
            flag = "--" + flag.replace("_", "-")
        print(f"error: {flag}: {exc.reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UserDataTooLarge as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TOO_LARGE
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_private(args.output, text)
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:], os.environ))
