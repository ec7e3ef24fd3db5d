"""``vm-agent dev``: the control plane and the daemon together on loopback, in one process.

The control plane (SQLite under the dev directory) mints the daemon's callback token and
a viewer token; the daemon verifies viewers with its JWKS and reports to it, and runs the
fake agent in a few scenarios. Ctrl-C stops both cleanly.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from vm_agent.cli.dev_agents import (
    AGENT_HOME_STATE,
    AgentPython,
    agents_run_as_pool,
    dev_agents,
    write_agents_file,
)
from vm_agent.runtime.settings import ENV_PREFIX, Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from control_plane.settings import ControlPlaneSettings
    from vm_agent.daemon.run import DaemonReady
    from vm_agent.daemon.stopper import Stopper

EXIT_FAILED, EXIT_CONFIG = 1, 2
DEV_NODE_ID = "dev-node"
DEFAULT_PORT = 8080
DEFAULT_CONTROL_PLANE_PORT = 8700
_VIEWER_TOKEN_TTL_S = 12 * 3600  # a working day of pasting the same attach line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dev-dir", type=Path, default=Path(".dev"), help="state (default ./.dev)")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"the daemon's port (0: any; default {ENV_PREFIX}LISTEN_PORT, else {DEFAULT_PORT})",
    )
    p.add_argument(
        "--control-plane-port",
        type=int,
        default=DEFAULT_CONTROL_PLANE_PORT,
        help="the control plane's port (0: any)",
    )


def dev_workspace_root(dev_dir: Path) -> Path:
    """``VM_AGENT_WORKSPACE_ROOTS`` unless set: /srv/workspaces as root, else under the dev dir.

    As root the agents are pool users, who cannot enter the (0700) dev dir.
    """
    configured = os.environ.get(f"{ENV_PREFIX}WORKSPACE_ROOTS")
    if configured:
        return Path(configured.split(":")[0])
    root = Path("/srv/workspaces") if os.geteuid() == 0 else dev_dir / "workspaces"
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    return root


def dev_settings(
    dev_dir: Path,
    control_plane_url: str,
    jwks_url: str,
    port: int | None,
    environ: Mapping[str, str] | None = None,
    *,
    python: AgentPython | None = None,
) -> Settings:
    """Dev settings; other ``VM_AGENT_*`` variables (timeouts, the port) still apply.

    An explicit ``port`` (``--port``) wins over ``VM_AGENT_LISTEN_PORT``.
    """
    values = {
        k: v
        for k, v in (os.environ if environ is None else environ).items()
        if k.startswith(ENV_PREFIX) and k != f"{ENV_PREFIX}ENV_FILE"
    }
    if port is not None:
        values[f"{ENV_PREFIX}LISTEN_PORT"] = str(port)
    else:
        values.setdefault(f"{ENV_PREFIX}LISTEN_PORT", str(DEFAULT_PORT))
    agents_file = dev_dir / "agents.toml"
    state = AGENT_HOME_STATE if agents_run_as_pool() else None
    write_agents_file(agents_file, dev_agents(dev_dir, state, python))
    values.setdefault(f"{ENV_PREFIX}WORKSPACE_ROOTS", str(dev_workspace_root(dev_dir)))
    values.update(
        {
            # Never the production env file: only one under the dev dir, if someone writes it.
            f"{ENV_PREFIX}ENV_FILE": str(dev_dir / "env"),
            f"{ENV_PREFIX}DEV_MODE": "1",
            f"{ENV_PREFIX}NODE_ID": DEV_NODE_ID,
            f"{ENV_PREFIX}CONTROL_PLANE_URL": control_plane_url,
            f"{ENV_PREFIX}JWKS_URL": jwks_url,
            f"{ENV_PREFIX}CALLBACK_TOKEN_FILE": str(dev_dir / "callback-token"),
            f"{ENV_PREFIX}BOOTSTRAP_TOKEN_FILE": str(dev_dir / "bootstrap-token"),
            f"{ENV_PREFIX}LISTEN_HOST": "127.0.0.1",
            f"{ENV_PREFIX}STATE_DIR": str(dev_dir / "daemon"),
            f"{ENV_PREFIX}AGENTS_FILE": str(agents_file),
            f"{ENV_PREFIX}LOG_FORMAT": "console",
        }
    )
    return load_settings(values)


def _command_name() -> str:
    # Paste-able: the same vm-agent this was started as.
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "vm-agent":
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m vm_agent"


def banner(
    ready: DaemonReady, control_plane_url: str, viewer_token: str, cwd: Path, user_token: str = ""
) -> str:
    task = (
        f"{_command_name()} task --url {control_plane_url} --token {user_token} "
        "run --agent fake 'hello'"
    )
    attach = (
        f"{_command_name()} attach --url {ready.viewer_url} --token {viewer_token} "
        f"--start fake --cwd {shlex.quote(str(cwd))} --prompt hello"
    )
    return "\n".join(
        [
            "",
            "vm-agent dev is running (Ctrl-C stops it)",
            f"  control plane: {control_plane_url}",
            f"  viewer url:    {ready.viewer_url}",
            f"  viewer token:  {viewer_token}",
            "  agents:        " + ", ".join(dev_agents(Path("."))),
            f"  workspaces:    under {cwd.parent} (a session's cwd must be)",
            f"  user token:    {user_token}",
            "  run a task through the control plane (to its outcome):",
            f"    {task}",
            "  or talk to the daemon directly, as a viewer:",
            f"    {attach}",
            "  (--start fake-tools asks for permissions: add --permission allow;"
            " --session ID --after-seq N to follow a session)",
            "",
        ]
    )


def run(args: argparse.Namespace) -> int:
    # The heavy imports happen here, before the event loop: a Ctrl-C during them is a
    # plain KeyboardInterrupt, and inside the loop the Stopper owns SIGINT from the start.
    # (Not at the top of the module: `vm-agent` builds every sub-command's parser.)
    try:
        import vm_agent.daemon.run  # noqa: F401
        from control_plane.app import bind_socket
        from control_plane.identity.tokens import mint_dev_tokens  # noqa: F401
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:
        # A VM installs the daemon's dependencies only; dev needs the control plane's too.
        print(
            f"vm-agent dev: {exc}; install the control-plane extra: "
            "pip install 'vm-agent[control-plane]'",
            file=sys.stderr,
        )
        return EXIT_FAILED

    dev_dir: Path = args.dev_dir.resolve()
    try:
        dev_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sock = bind_socket("127.0.0.1", args.control_plane_port)
    except OSError as exc:
        print(f"vm-agent dev: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    return anyio.run(_run, args, dev_dir, sock)


async def _run(args: argparse.Namespace, dev_dir: Path, sock: socket.socket) -> int:
    from vm_agent.daemon.stopper import Stopper as StopperImpl

    stopper = StopperImpl()
    code = EXIT_FAILED
    async with anyio.create_task_group() as tg:
        # Signals first: a Ctrl-C while the control plane starts is a clean stop too.
        await tg.start(stopper.watch)
        try:
            code = await _dev(args, dev_dir, sock, stopper)
        finally:
            tg.cancel_scope.cancel()
    return code


async def _dev(
    args: argparse.Namespace, dev_dir: Path, sock: socket.socket, stopper: Stopper
) -> int:
    from control_plane.app import dev_app, plane_of_app
    from control_plane.settings import ControlPlaneSettings

    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cp_settings = ControlPlaneSettings(
        state_dir=dev_dir / "control-plane",
        public_url=url,
        viewer_token_ttl_s=_VIEWER_TOKEN_TTL_S,
    )
    # The lifecycle sees the daemon as a node of the `dev` provider (control_plane/
    # providers/dev.py): adopted once it runs, forgotten (never stopped) if deleted.
    provider_state = dev_dir / "dev-provider.json"
    app = dev_app(cp_settings, provider_state)
    try:
        return await _serve(
            args, dev_dir, sock, stopper, cp_settings, app=app, state=provider_state
        )
    finally:
        plane_of_app(app).close()


async def _serve(
    args: argparse.Namespace,
    dev_dir: Path,
    sock: socket.socket,
    stopper: Stopper,
    cp_settings: ControlPlaneSettings,
    *,
    app: Starlette,
    state: Path,
) -> int:
    from control_plane.app import adopt_dev_node, record_node_address, serve_control_plane
    from control_plane.identity.tokens import mint_dev_tokens
    from vm_agent.cli.dev_agents import DevAgentsError, agent_python
    from vm_agent.control_link.token import write_token_file
    from vm_agent.daemon.run import run_daemon

    async with serve_control_plane(cp_settings, app=app, sock=sock) as base_url:
        if stopper.requested.is_set():
            return 0
        tokens = mint_dev_tokens(cp_settings, DEV_NODE_ID)
        write_token_file(dev_dir / "callback-token", tokens.callback_token)
        try:
            python = agent_python(dev_dir)
            settings = dev_settings(dev_dir, base_url, tokens.jwks_url, args.port, python=python)
        except (SettingsError, DevAgentsError) as exc:
            print(f"vm-agent dev: {exc}", file=sys.stderr, flush=True)
            return EXIT_CONFIG

        workspace = Path(str(settings.workspace_root_paths[0])) / "dev"

        def show(ready: DaemonReady) -> None:
            # The control plane dispatches tasks to this daemon, the dev node.
            record_node_address(cp_settings, DEV_NODE_ID, ready.viewer_url, str(workspace.parent))
            adopt_dev_node(cp_settings, DEV_NODE_ID, state)
            print(
                banner(ready, base_url, tokens.viewer_token, workspace, tokens.user_token),
                flush=True,
            )

        return await run_daemon(
            settings, on_ready=show, stopper=stopper, ensure_agent_users=agents_run_as_pool()
        )
