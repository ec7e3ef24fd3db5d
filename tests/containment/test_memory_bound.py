"""Many outstanding 8 MiB reads from one agent: the daemon holds a few at a time, not all.

The hostile agent sends 60 ``fs/read_text_file`` requests for an 8 MiB file at once and
then does not read its stdin for a while (issue 14 saw 92 MB grow to about 1 GB). The
daemon's side here is this test process; its peak RSS is reset first (``clear_refs``) and
read after. The same attack with the bound lifted shows what the bound is worth.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from tests.session.harness import fake, running, text_prompt
from vm_agent.session.config import SessionConfig

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

MiB = 1024 * 1024
COUNT = 60


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


async def _peak_growth_mib(tmp_path: Path, max_heavy: int) -> tuple[float, dict[str, object]]:
    tmp_path.mkdir()
    async with running(tmp_path, [fake("hostile")]) as h:
        h.supervisor.config = SessionConfig(
            policy=h.supervisor.config.policy,
            stop_timings=h.supervisor.config.stop_timings,
            start_timeout_s=20,
            max_heavy_requests=max_heavy,
        )
        big = h.workdir / "big.txt"
        big.write_bytes(b"x" * (8 * MiB - 16))
        session = await h.ready("hostile")
        attack = [{"fs_read_flood": {"path": str(big), "count": COUNT, "stall_s": 3}}]
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the RSS now
        before = _rss_kib("VmRSS")
        outcome = await session.prompt("p1", text_prompt(json.dumps(attack)))
        peak = _rss_kib("VmHWM")
        assert outcome.outcome == "completed"
        events = await h.events(session)
        [event] = [e for e in events if e.type == "acp.update" and "answers" in str(e.data)]
        [result] = json.loads(event.data["update"]["content"]["text"])
    return (peak - before) / 1024, json.loads(result["detail"])


async def test_outstanding_big_reads_are_bounded(tmp_path: Path) -> None:
    bounded, report = await _peak_growth_mib(tmp_path / "bounded", max_heavy=4)
    assert report["answers"] == COUNT and report["bytes"] == COUNT * (8 * MiB - 16), report
    unbounded, _ = await _peak_growth_mib(tmp_path / "unbounded", max_heavy=COUNT)
    print(f"\npeak growth: {bounded:.0f} MiB with 4 in flight, {unbounded:.0f} MiB with {COUNT}")
    assert bounded < 200, f"{bounded:.0f} MiB"
    assert unbounded > 2 * bounded  # the test measures what the bound changes
