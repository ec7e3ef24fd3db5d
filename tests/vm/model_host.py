"""A scripted model provider on the host for a real agent in the guest: the real-agents
suite's Anthropic Messages stand-in (tests/real_agents), on the host's loopback, reached
by the guest through a guest forward."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from anyio.from_thread import BlockingPortal

from control_plane.providers.qemu.command import GUEST_FORWARD_ADDRESS, GuestForward
from tests.real_agents import anthropic_api
from tests.real_agents.model_api import Reply, Script, serve

GUEST_MODEL_PORT = 8765


@dataclass(frozen=True)
class ModelHost:
    script: Script
    port: int

    @property
    def guest_url(self) -> str:
        """The base URL an agent in the guest is given."""
        return f"http://{GUEST_FORWARD_ADDRESS}:{GUEST_MODEL_PORT}"

    def forward(self) -> GuestForward:
        return GuestForward(GUEST_MODEL_PORT, self.port)


@contextlib.contextmanager
def anthropic_stand_in(
    portal: BlockingPortal, replies: Sequence[Reply] = ()
) -> Iterator[ModelHost]:
    # the script's events belong to the portal's event loop: made there
    script = portal.call(lambda: Script(replies))
    app = anthropic_api.app(script)
    with portal.wrap_async_context_manager(serve(app, script, host="127.0.0.1")) as served:
        assert served.url is not None
        yield ModelHost(script, int(served.url.rsplit(":", 1)[1]))
