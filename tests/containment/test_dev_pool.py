"""`vm-agent dev` as root makes the agent-user pool itself and says where sessions work."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import stat
from pathlib import Path, PurePosixPath

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from tests.containment.pool import require_root
from tests.daemon.harness import base_env, vm_agent
from vm_agent.cli.dev_agents import shared_code_dir
from vm_agent.containment.ensure import plan_for, remove_pool
from vm_agent.containment.users import PoolSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]


async def test_dev_as_root_ensures_the_pool(tmp_path: Path) -> None:
    require_root()
    pid = os.getpid()
    base = Path(f"/tmp/vmat-dev-{pid}")
    spec = PoolSpec(
        count=2,
        uid_base=62000 + (pid % 29) * 100 + 50,  # beside the shared test pool's range
        prefix=f"vmat{pid}d-u",
        homes_dir=PurePosixPath(base / "homes"),
    )
    base.mkdir(mode=0o755)
    env = {
        **base_env(),
        "VM_AGENT_AGENT_USERS": str(spec.count),
        "VM_AGENT_AGENT_UID_BASE": str(spec.uid_base),
        "VM_AGENT_AGENT_USER_PREFIX": spec.prefix,
        "VM_AGENT_AGENT_HOMES_DIR": str(spec.homes_dir),
        "VM_AGENT_WORKSPACE_ROOTS": str(base / "ws"),
    }
    (base / "ws").mkdir(mode=0o755)
    argv = vm_agent("dev", "--dev-dir", str(tmp_path / "dev"), "--port", "0")
    argv += ["--control-plane-port", "0"]
    try:
        with (tmp_path / "dev.log").open("wb") as log:
            process = await anyio.open_process(argv, env=env, stderr=log)
        try:
            assert process.stdout is not None
            stream, seen = TextReceiveStream(process.stdout), ""
            with anyio.fail_after(90):
                while (
                    not re.search(r" attach --url .*--prompt hello\n", seen)
                    or " task --url" not in seen
                ):
                    seen += await stream.receive()
            assert f"--cwd {base / 'ws' / 'dev'}" in seen
            # The quick start's first prompt, as root: the fake agent runs as a pool user,
            # who cannot reach this checkout's interpreter under /root (pyenv), so dev
            # runs it on one they can with a copy of its code (never an exit 126).
            url = re.search(r"viewer url: +(\S+)\n", seen)
            token = re.search(r"viewer token: +(\S+)\n", seen)
            assert url and token
            attach = vm_agent(
                "attach", "--url", url[1], "--start", "fake", "--cwd", str(base / "ws" / "dev"),
                "--prompt", "hello", "--json",
            )  # fmt: skip
            done = await anyio.run_process(
                attach, env={**base_env(), "VM_AGENT_TOKEN": token[1]}, check=False
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            outcome = json.loads(done.stdout.decode().splitlines()[-1])
            assert outcome["outcome"] == "completed", outcome
            # and the quick start's task, through the control plane, as root
            line = re.search(r" task --url (\S+) --token (\S+) run --agent fake 'hello'\n", seen)
            assert line is not None
            run = vm_agent("task", "--url", line[1], "--token", line[2], "run", "--agent", "fake",
                           "hello")  # fmt: skip
            ran = await anyio.run_process(run, env=base_env(), check=False)
            assert ran.returncode == 0, ran.stderr.decode()[-2000:]
            assert re.search(r"== task \S+: completed", ran.stdout.decode()), ran.stdout.decode()
            assert plan_for(spec).done
            home = os.stat(str(spec.user(1).home))
            assert (home.st_uid, stat.S_IMODE(home.st_mode)) == (spec.uid_base + 1, 0o700)
            assert pwd.getpwnam(spec.user(0).name).pw_uid == spec.uid_base
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(60):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
        assert "agent users: create user" in (tmp_path / "dev.log").read_text()
    finally:
        remove_pool(spec)
        shutil.rmtree(shared_code_dir(tmp_path / "dev"), ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
