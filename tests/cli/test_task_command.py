"""`vm-agent task` against `vm-agent dev`, the way the README's quick start runs it: the
banner's task line submits a task to dev's control plane, which dispatches it to dev's
daemon, and the command prints the agent's answer and exits with the outcome."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from tests.daemon.harness import base_env, vm_agent

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


async def _banner(stream: TextReceiveStream) -> str:
    seen = ""
    with anyio.fail_after(90):
        while not re.search(r" task --url \S+ --token \S+ run --agent fake 'hello'\n", seen):
            seen += await stream.receive()
    return seen


async def test_the_banners_task_line_runs_a_task_to_completed(tmp_path: Path) -> None:
    dev_dir = tmp_path / "dev"
    argv = vm_agent("dev", "--dev-dir", str(dev_dir), "--port", "0", "--control-plane-port", "0")
    env = {**base_env(), "VM_AGENT_WORKSPACE_ROOTS": str(tmp_path), "VM_AGENT_AGENTS_AS_ROOT": "1"}
    with (tmp_path / "dev.log").open("wb") as log:
        process = await anyio.open_process(argv, env=env, stderr=log)
    try:
        assert process.stdout is not None
        seen = await _banner(TextReceiveStream(process.stdout))
        line = re.search(r" task --url (\S+) --token (\S+) run --agent fake 'hello'\n", seen)
        assert line is not None
        url, token = line[1], line[2]
        run = vm_agent("task", "--url", url, "--token", token, "run", "--agent", "fake", "hello")
        done = await anyio.run_process(run, env=base_env(), check=False)
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, err[-3000:]
        assert "hello" in out  # the fake agent's answer, streamed
        assert re.search(r"== task \S+: completed", out), out
        task_id = re.search(r"task (\S+): ", err)
        assert task_id is not None
        # the same task, read back as JSON: its events from the control plane
        show = vm_agent("task", "--url", url, "--token", token, "--json", "show", task_id[1])
        record = json.loads((await anyio.run_process(show, env=base_env())).stdout)
        assert record["status"] == "completed"
        # refusals are clear: another user's (none) task, an unknown agent
        missing = vm_agent("task", "--url", url, "--token", token, "show", "no-such-task")
        gone = await anyio.run_process(missing, env=base_env(), check=False)
        assert gone.returncode == 2 and b"404" in gone.stderr
        bad = vm_agent("task", "--url", url, "--token", token, "run", "--agent", "nope", "hi")
        refused = await anyio.run_process(bad, env=base_env(), check=False)
        assert refused.returncode == 2 and b"422" in refused.stderr
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(60):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
