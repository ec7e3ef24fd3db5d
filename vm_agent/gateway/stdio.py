"""stdin and stdout as anyio byte streams: non-blocking, so a read waiting for the client
never holds a thread and the gateway can stop at any moment."""

from __future__ import annotations

import contextlib
import os

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream

_READ_SIZE = 256 * 1024


class FdReceiveStream(ByteReceiveStream):
    def __init__(self, fd: int) -> None:
        self._fd = fd
        os.set_blocking(fd, False)

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        while True:
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        pass  # the process's own descriptor: it closes at exit


class FdSendStream(ByteSendStream):
    def __init__(self, fd: int) -> None:
        self._fd = fd
        os.set_blocking(fd, False)

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await anyio.wait_writable(self._fd)
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise anyio.BrokenResourceError from exc
            view = view[written:]

    async def aclose(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
