"""The control plane reaches a node over TLS only if the node's certificate was issued by
its node CA for that node's name: a daemon with such a certificate runs the task; one
whose certificate another CA signed is never sent anything."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from tests.dispatch.harness import foreign_tls, node_ca_tls, stack, unrecorded_tls

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_node_with_a_node_ca_certificate_runs_the_task(tmp_path: Path) -> None:
    async with stack(tmp_path, tls=node_ca_tls) as s:
        assert s.viewer_url.startswith("wss://127.0.0.1:")
        await s.submit(taskId="t1", agent="fake", prompt="over tls")
        done = await s.until("t1", "completed", "failed", "crashed", "timed_out")
        assert done["status"] == "completed", done


async def test_a_node_ca_certificate_that_is_not_the_one_on_record_is_sent_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="control_plane.dispatch")
    async with stack(tmp_path, tls=unrecorded_tls) as s:
        await s.submit(taskId="t1", agent="fake", prompt="not to a thief")
        with anyio.fail_after(60):
            while "certificate refused" not in caplog.text:
                await anyio.sleep(0.05)
        task = await s.task("t1")
        assert task["status"] == "starting"  # never started: nothing was sent
        assert await s.events("t1") == []


async def test_a_node_whose_certificate_another_ca_signed_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="control_plane.dispatch")
    async with stack(tmp_path, tls=foreign_tls) as s:
        await s.submit(taskId="t1", agent="fake", prompt="not to a stranger")
        with anyio.fail_after(60):
            while "CERTIFICATE_VERIFY_FAILED" not in caplog.text:
                await anyio.sleep(0.05)
        task = await s.task("t1")
        assert task["status"] == "starting"  # never started: nothing was sent
        assert await s.events("t1") == []
