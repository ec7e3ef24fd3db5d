"""Event log benchmark: relay throughput through the durable log, resume reads.

Run: `.venv/bin/python -m benchmarks.eventlog_bench [--events N]`. Prints
timings only (no pass/fail): the goals are a resume of 100,000 events under
1.5 s and a relay rate well above what one agent streams.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio

from vm_agent.eventlog import EventLog

# ~200 bytes stored per event, like an agent_message_chunk.
UPDATE = {
    "sessionId": "acp-0123456789",
    "update": {
        "sessionUpdate": "agent_message_chunk",
        "content": {"type": "text", "text": "lorem ipsum dolor sit amet " * 3},
    },
}


async def _appender(log: EventLog, session_id: str, count: int) -> None:
    for _ in range(count):
        await log.append(session_id, "acp.update", UPDATE, ts=1.0)


async def _bench(directory: Path, events: int) -> None:
    path = directory / "events.sqlite3"
    retention = 1 << 40  # keep everything: this measures the log, not retention
    async with EventLog.open(path, retention_bytes_per_session=retention) as log:
        n = min(events, 5_000)
        start = time.perf_counter()
        await _appender(log, "one", n)
        took = time.perf_counter() - start
        print(f"append, 1 sequential appender:      {n / took:10.0f} events/s ({n} events)")

        start = time.perf_counter()
        for _ in range(events - 1):
            log.submit("piped", "acp.update", UPDATE, ts=1.0)
        await log.submit("piped", "acp.update", UPDATE, ts=1.0).durable()
        took = time.perf_counter() - start
        print(f"submit, 1 session pipelined:        {events / took:10.0f} events/s ({events})")

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for worker in range(50):
                tg.start_soon(_appender, log, f"s{worker % 10}", events // 50)
        took = time.perf_counter() - start
        print(f"append, 50 concurrent appenders:    {events / took:10.0f} events/s ({events})")

        per_session = events // 10
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(_appender, log, "big", events // 100)
        took = time.perf_counter() - start
        print(f"append, 100 appenders on 1 session: {events / took:10.0f} events/s ({events})")

    async with EventLog.open(path, retention_bytes_per_session=retention) as log:
        start = time.perf_counter()
        everything = await log.read("big", 0, limit=events)
        took = time.perf_counter() - start
        size = sum(len(e.payload) for e in everything)
        print(
            f"read {len(everything)} events of one session in one call: {took:.3f} s "
            f"({size / len(everything):.0f} bytes each)"
        )

        start = time.perf_counter()
        after, count = 0, 0
        while page := await log.read("big", after, limit=1000):
            count += len(page)
            after = page[-1].seq
        took = time.perf_counter() - start
        print(f"resume {count} events in pages of 1000: {took:.3f} s (goal < 1.5 s)")

        start = time.perf_counter()
        after = 0
        while payloads := await log.read_payloads("big", after, limit=1000):
            after += len(payloads)
        took = time.perf_counter() - start
        print(f"resume {after} payloads (read_payloads) in pages of 1000: {took:.3f} s")

        start = time.perf_counter()
        after, count = 0, 0
        while page := await log.read(f"s{0}", after, limit=1000):
            count += len(page)
            after = page[-1].seq
        took = time.perf_counter() - start
        print(f"resume {count} events of 1 of 10 interleaved sessions: {took:.3f} s")

        start = time.perf_counter()
        cursor, count = 0, 0
        while True:
            batch, cursor = await log.read_global(cursor, limit=500, max_bytes=1 << 20)
            if not batch:
                break
            count += len(batch)
        took = time.perf_counter() - start
        print(f"outbox read of {count} events (500/batch): {took:.3f} s")
        print(f"file size: {log.size_bytes() / 1e6:.1f} MB; {per_session} events per s<i> session")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        anyio.run(_bench, Path(directory), args.events)


if __name__ == "__main__":
    main()
