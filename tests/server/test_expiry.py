"""A viewer is closed with 4001 once its token expires (exp plus the verifier's leeway),
however it authenticated. Tokens here live a few seconds; the tests wait for the close
itself (with a generous bound), never for a guessed duration."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.server.harness import Client, daemon, fake, metric_value

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

LEEWAY_S = 1.0
TTL_S = 3


async def _closed(client: Client) -> tuple[int, str, float]:
    """Waits for the daemon to close the viewer; returns its code, reason and when."""
    with anyio.fail_after(60):
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv()
    rcvd = closed.value.rcvd
    assert rcvd is not None
    return rcvd.code, rcvd.reason, time.time()


def _deadline(token: str) -> float:
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    return float(exp) + LEEWAY_S


async def test_header_and_first_message_viewers_are_closed_when_their_token_expires(
    tmp_path: Path,
) -> None:
    async with daemon(tmp_path, leeway_s=LEEWAY_S) as d:
        long = d.token(ttl_s=300)
        short = d.token(ttl_s=TTL_S)
        async with (
            d.viewer(short) as by_header,
            d.viewer(bearer=False) as by_message,
            d.viewer(long) as lasting,
        ):
            answer = await by_message.request("auth", {"token": short})
            assert "result" in answer
            # Working while the token holds.
            assert await by_header.call("session/list") == {"sessions": []}
            assert await by_message.call("session/list") == {"sessions": []}
            for viewer in (by_header, by_message):
                code, reason, at = await _closed(viewer)
                assert (code, reason) == (4001, "token expired")
                assert at >= _deadline(short) - 0.05  # not before exp + leeway
            # The viewer with a long-lived token is untouched.
            assert await lasting.call("session/list") == {"sessions": []}
        assert metric_value(d.metrics, "vm_agent_viewer_tokens_expired_total") == 2


async def test_a_subscriber_mid_stream_is_closed_too_and_its_prompt_goes_on(
    tmp_path: Path,
) -> None:
    slow = fake("slow", "--chunks", "60", "--delay-ms", "100")  # about 6 s of streaming
    async with daemon(tmp_path, [slow], leeway_s=LEEWAY_S) as d:
        async with d.viewer(d.token(ttl_s=300)) as owner:
            await d.start(owner, "slow", session_id="s1")
        short = d.token(ttl_s=TTL_S)
        async with d.viewer(short) as v:
            await v.call("session/subscribe", {"session_id": "s1"})
            await v.send(
                {
                    "jsonrpc": "2.0",
                    "id": "p",
                    "method": "session/prompt",
                    "params": {
                        "session_id": "s1",
                        "prompt": [{"type": "text", "text": "go"}],
                        "prompt_id": "p1",
                    },
                }
            )
            code, reason, _ = await _closed(v)
            assert (code, reason) == (4001, "token expired")
        # The prompt belongs to the session, not to the viewer that asked: it finishes.
        async with d.viewer(d.token(ttl_s=300)) as again:
            outcome = await again.call(
                "session/prompt",
                {"session_id": "s1", "prompt": [{"type": "text", "text": "go"}], "prompt_id": "p1"},
            )
        assert outcome["outcome"] == "completed"


async def test_a_token_inside_its_leeway_is_accepted_then_closed_at_the_leeway(
    tmp_path: Path,
) -> None:
    async with daemon(tmp_path, leeway_s=5.0) as d:
        # Expired a second ago, by its exp: still inside the 5 s leeway.
        issuer = d.tokens.with_clock(lambda: time.time() - 3)
        token = issuer.mint_viewer_token("node-1", ["read"], 2)
        async with d.viewer(token) as v:
            assert await v.call("session/list") == {"sessions": []}
            code, reason, at = await _closed(v)
        assert (code, reason) == (4001, "token expired")
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        assert at >= exp + 5.0 - 0.05
