"""The systemd notify protocol (`Type=notify`, watchdog) over a Unix datagram socket.

Everything is a no-op when NOTIFY_SOCKET is unset (not run by systemd). Send
errors are logged once and never raised: a daemon must not die because its
supervisor's socket went away.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

import anyio

log = logging.getLogger(__name__)


class SdNotifier:
    """A client of `$NOTIFY_SOCKET`; build it with `from_env()`."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        # "@name" is an abstract socket: a leading NUL byte on the wire.
        self.address = address or None
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        self._error_logged = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SdNotifier:
        env = os.environ if env is None else env
        return cls(
            env.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_int(env, "WATCHDOG_USEC"),
            watchdog_pid=_int(env, "WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self) -> None:
        self.notify(READY="1")

    def stopping(self) -> None:
        self.notify(STOPPING="1")

    def watchdog(self) -> None:
        self.notify(WATCHDOG="1")

    def status(self, text: str) -> None:
        self.notify(STATUS=text)

    def notify(self, **fields: object) -> None:
        """Send `KEY=value` lines in one datagram (newlines in values become spaces)."""
        if self.address is None or not fields:
            return
        message = "".join(
            f"{key}={str(value).replace(chr(10), ' ')}\n" for key, value in fields.items()
        )
        self._send(message.encode())

    def watchdog_interval_s(self) -> float | None:
        """Half of WATCHDOG_USEC, or None when no watchdog is asked of this process."""
        if self.address is None or not self._watchdog_usec or self._watchdog_usec <= 0:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None  # the watchdog is meant for another process (e.g. our parent)
        return self._watchdog_usec / 2 / 1_000_000

    async def watchdog_loop(self) -> None:
        """Ping WATCHDOG=1 from the event loop until cancelled (returns at once if no
        watchdog is asked): a stuck loop stops the pings and systemd restarts us."""
        interval = self.watchdog_interval_s()
        if interval is None:
            return
        while True:
            self.watchdog()
            await anyio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, data: bytes) -> None:
        assert self.address is not None
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop on a full receive queue: drop the message.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(data, target)
        except OSError as exc:
            if not self._error_logged:
                log.warning(
                    "sd_notify to %s failed (further failures not logged): %s", self.address, exc
                )
                self._error_logged = True


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not an integer", name, raw)
        return None
