"""The strangers of the flood benchmark, in a process of their own (so that their work is
not charged to the real viewers measured in the benchmark's process).

`python -m benchmarks.flood_attack --port P --holders N ...` floods until SIGTERM, prints
`underway` once every holder has dialled and every pusher has pushed a frame, and at the
end one JSON line of what it did.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from contextlib import suppress
from dataclasses import asdict, dataclass, field

import anyio
from anyio.abc import TaskGroup
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

FAT_FRAME = b"x" * (4 * 1024 * 1024)
FORGED = "Bearer eyJhbGciOiJFZERTQSIsImtpZCI6Im5vIn0.e30.Zm9yZ2Vk"
_GONE = (OSError, anyio.EndOfStream, anyio.BrokenResourceError, ConnectionClosed)


@dataclass
class Counts:
    dials: int = 0
    dropped: int = 0  # holders the daemon closed (refused at accept, evicted, timed out)
    fat_frames: int = 0
    fat_closes: dict[int, int] = field(default_factory=dict)
    forged: dict[int, int] = field(default_factory=dict)


@dataclass
class Attack:
    port: int
    holders: int
    addresses: int
    pushers: int
    forgers: int
    redial_s: float
    counts: Counts = field(default_factory=Counts)
    underway: anyio.Event = field(default_factory=anyio.Event)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def _progress(self) -> None:
        c = self.counts
        if c.dials >= self.holders and c.fat_frames >= self.pushers:
            self.underway.set()

    async def hold(self, source: str) -> None:
        """A silent socket (slow loris), dialled again as soon as the daemon drops it."""
        while True:
            self.counts.dials += 1
            self._progress()
            try:
                stream = await anyio.connect_tcp("127.0.0.1", self.port, local_host=source)
            except OSError:
                await anyio.sleep(self.redial_s)
                continue
            async with stream:
                with suppress(*_GONE):
                    await stream.receive()  # the daemon sends nothing: this is its close
            self.counts.dropped += 1
            await anyio.sleep(self.redial_s)

    async def push(self, source: str) -> None:
        """An unauthenticated websocket that sends a 4 MiB frame first, again and again."""
        while True:
            try:
                ws = await connect(
                    self.url, max_size=None, open_timeout=30, close_timeout=1,
                    local_addr=(source, 0),
                )  # fmt: skip
            except (OSError, InvalidHandshake, TimeoutError):
                await anyio.sleep(self.redial_s)
                continue
            code = 0
            try:
                await ws.send(FAT_FRAME)
                await ws.recv()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 0
            finally:
                if not ws.transport.is_closing():
                    ws.transport.abort()
            c = self.counts
            c.fat_frames += 1
            c.fat_closes[code] = c.fat_closes.get(code, 0) + 1
            self._progress()

    async def forge(self, source: str) -> None:
        """Upgrades with a forged token, one after another."""
        while True:
            status = 0
            try:
                async with connect(
                    self.url, additional_headers={"Authorization": FORGED}, open_timeout=30,
                    local_addr=(source, 0),
                ):  # fmt: skip
                    pass
            except InvalidHandshake as exc:
                response = getattr(exc, "response", None)
                status = response.status_code if response is not None else -1
            except (OSError, TimeoutError):
                status = -1
            self.counts.forged[status] = self.counts.forged.get(status, 0) + 1
            await anyio.sleep(self.redial_s)

    def start(self, tg: TaskGroup) -> None:
        def source(i: int) -> str:
            return f"127.0.0.{2 + i % self.addresses}"

        for i in range(self.holders):
            tg.start_soon(self.hold, source(i))
        for i in range(self.pushers):
            tg.start_soon(self.push, source(i))
        for i in range(self.forgers):
            tg.start_soon(self.forge, source(i))


async def main(args: argparse.Namespace) -> None:
    attack = Attack(
        args.port, args.holders, args.addresses, args.pushers, args.forgers, args.redial_s
    )
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            attack.start(tg)

            async def say_underway() -> None:
                await attack.underway.wait()
                print("underway", flush=True)

            tg.start_soon(say_underway)
            async for _ in signals:
                break
            tg.cancel_scope.cancel()
    print(json.dumps(asdict(attack.counts)), flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flood_attack")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--holders", type=int, default=100)
    p.add_argument("--addresses", type=int, default=4)
    p.add_argument("--pushers", type=int, default=4)
    p.add_argument("--forgers", type=int, default=1)
    p.add_argument("--redial-s", type=float, default=0.05)
    return p.parse_args(argv)


if __name__ == "__main__":
    anyio.run(main, parse(sys.argv[1:]))
