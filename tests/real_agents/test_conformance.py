"""The pinned real agents through the real daemon and `vm-agent prompt`.

Everything is real (the adapters and the CLIs under them, the daemon, its websocket, the
viewers) except the model provider's cloud API, which a scripted stand-in on loopback
plays (see ``model_api``). What each agent does and does not support is said per case.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from tests.real_agents.agents import KITS, Kit, require_real_agents
from tests.real_agents.harness import (
    WAIT_S,
    agent_text,
    allow_once,
    chunk_with,
    daemon,
    event,
    rig,
    send_prompt,
    start_session,
    vm_agent_prompt,
)
from tests.real_agents.model_api import Reply

pytestmark = [pytest.mark.real_agents, pytest.mark.anyio, pytest.mark.timeout(600)]

ALL = pytest.mark.parametrize("kit", list(KITS.values()), ids=list(KITS))
WITH_CLIENT_FS = pytest.mark.parametrize(
    "kit", [k for k in KITS.values() if k.write is not None], ids=lambda k: k.name
)


@pytest.fixture(autouse=True)
def _real_agents() -> None:
    require_real_agents()


@ALL
async def test_a_tool_call_asks_a_viewer_who_allows_it(tmp_path: Path, kit: Kit) -> None:
    marker = f"ran-{kit.name}-4711"
    async with rig(tmp_path, kit) as r:
        command = f"echo {marker} > {r.work}/ran.txt && cat {r.work}/ran.txt"
        r.script.add(
            Reply(text="Running it now. ", tool=kit.shell(command)),
            Reply(text="The command ran."),
        )
        async with daemon(r, r.agents_file()) as d, d.viewer() as v:
            await start_session(v, r)
            asked = await send_prompt(v, "please run the command", "p1")
            requested = await event(v, "permission.requested")
            d.look()
            choice = allow_once(requested["data"])
            await v.call(
                "permission/respond",
                {
                    "session_id": "s1",
                    "request_id": requested["data"]["request_id"],
                    "option_id": choice,
                },
            )
            outcome = await v.answer(asked, timeout=WAIT_S)
            resolved = await event(v, "permission.resolved")
        assert outcome["outcome"] == "completed", outcome
        assert resolved["data"]["outcome"] == {"outcome": "selected", "optionId": choice}
        assert (r.work / "ran.txt").read_text() == f"{marker}\n"  # the agent ran it
        first, second = r.script.turns()[:2]
        assert marker not in first.text
        assert marker in second.text  # the command's output went back to the model
        assert "The command ran." in agent_text(v.events)
        kinds = [e["type"] for e in v.events]
        assert kinds.index("permission.requested") < kinds.index("permission.resolved")
        assert kinds.index("permission.resolved") < kinds.index("prompt.finished")


@WITH_CLIENT_FS
async def test_a_file_edit_goes_through_the_clients_fs(tmp_path: Path, kit: Kit) -> None:
    # The agent sees the work directory read-only and out.txt empty: only the daemon's
    # fs/read_text_file can show what out.txt holds (the agent shows it as the diff's old
    # text when it asks permission) and only fs/write_text_file can change it.
    assert kit.write is not None
    before = "before: kiwi-2718, only the client can read this\n"
    async with rig(tmp_path, kit) as r:
        target = r.work / "out.txt"
        target.write_text(before)
        r.script.add(
            Reply(text="Writing. ", tool=kit.write(target, "after: kiwi\n")),
            Reply(text="Written."),
        )
        r.agents_file(credentials=True, read_only=r.work, mask=target)
        env = {**_env_without_keys(), kit.key_var: r.key}
        run = await vm_agent_prompt(r, "update out.txt", "--permission", "allow", env=env)
    assert run.outcome["outcome"] == "completed", (run.outcome, run.stderr[-2000:])
    assert target.read_text() == "after: kiwi\n"  # written by fs/write_text_file
    (asked,) = [e["data"] for e in run.events if e["type"] == "permission.requested"]
    diffs = [c for c in asked["request"]["toolCall"]["content"] if c.get("type") == "diff"]
    assert [(d["oldText"], d["newText"]) for d in diffs] == [(before, "after: kiwi\n")]
    assert "Written." in run.texts()


@ALL
async def test_sigkill_mid_answer_is_recovered_and_the_next_turn_carries_the_earlier_one(
    tmp_path: Path, kit: Kit
) -> None:
    word = f"papaya-{kit.name}"
    async with rig(tmp_path, kit) as r:
        r.script.add(
            Reply(text=f"Noted, the word is {word}."),
            Reply(text="Thinking about the answer, ", hold=True),
            Reply(text="Here again."),
        )
        async with daemon(r, r.agents_file()) as d, d.viewer() as v:
            await start_session(v, r)
            first = await v.answer(await send_prompt(v, f"remember {word}", "p1"), WAIT_S)
            assert first["outcome"] == "completed", first
            asked = await send_prompt(v, "now think hard", "p2")
            await chunk_with(v, "Thinking")  # the answer is being written
            d.look()
            victim = d.agent_pid()  # what the daemon started (codex: the Node wrapper)
            os.kill(victim, signal.SIGKILL)
            second = await v.answer(asked, WAIT_S)
            report = (await event(v, "agent.crash_report"))["data"]
            if kit.loads_sessions:
                third = await v.answer(await send_prompt(v, "what was the word?", "p3"), WAIT_S)
                assert d.agent_pid() != victim
                d.look()
        assert r.script.turns()[1].aborted  # the held answer was cut by the kill
        assert report["signal_name"] == "SIGKILL"
        assert report["last_method"] == "session/prompt"
        if not kit.loads_sessions:
            # The daemon did its part: it classified the disconnect resumable, started a
            # new process and asked it to load the session; the agent could not (gemini-cli
            # 0.61 answers -32603 in most runs; once, on a loaded machine, its load worked).
            if second["outcome"] == "recovered":
                assert report["recovered"] is True, report
                return
            assert second["outcome"] == "crashed", second
            assert report["recovered"] is False
            assert "session/load" in report["recovery_error"]
            return
        assert second["outcome"] == "recovered", second
        assert report["recovered"] is True
        assert third["outcome"] == "completed", third
        assert word in r.script.turns()[-1].text  # the new process sent the earlier turn
        assert "Here again." in agent_text(v.events)


@ALL
async def test_cancel_mid_answer(tmp_path: Path, kit: Kit) -> None:
    async with rig(tmp_path, kit) as r:
        r.script.add(Reply(text="Starting a long answer, ", hold=True), Reply(text="Fresh start."))
        async with daemon(r, r.agents_file()) as d, d.viewer() as v:
            await start_session(v, r)
            pid = d.agent_pid()
            asked = await send_prompt(v, "write a long essay", "p1")
            await chunk_with(v, "Starting")
            d.look()
            await v.call("session/cancel", {"session_id": "s1"})
            outcome = await v.answer(asked, WAIT_S)
            if kit.drops_stream_on_cancel:
                with anyio.fail_after(WAIT_S):
                    while not r.script.turns()[0].aborted:
                        await anyio.sleep(0.05)
            after = [await v.answer(await send_prompt(v, "something short", "p2"), WAIT_S)]
            if not kit.runs_next_prompt_after_cancel:
                assert len(r.script.turns()) == 1  # p2 ended without a model call
                after.append(await v.answer(await send_prompt(v, "once more", "p3"), WAIT_S))
            await chunk_with(v, "Fresh start.")
            assert d.agent_pid() == pid  # the agent honoured the cancel: never force-stopped
        assert (outcome["outcome"], outcome.get("stop_reason")) == ("cancelled", "cancelled")
        assert [a["outcome"] for a in after] == ["completed"] * len(after)
        turns = r.script.turns()
        assert "something short" in turns[1].text
        if kit.runs_next_prompt_after_cancel:
            assert len(turns) == 2  # the held turn, then p2's
        else:
            # p2's message only ran with p3, in a turn of its own before p3's
            assert len(turns) == 3 and "once more" in turns[2].text


@ALL
async def test_one_turn_with_the_key_from_the_callers_environment(tmp_path: Path, kit: Kit) -> None:
    async with rig(tmp_path, kit, [Reply(text="Hello from the stand-in.")]) as r:
        r.agents_file(credentials=True)
        env = {**_env_without_keys(), kit.key_var: r.key}
        run = await vm_agent_prompt(r, "say hello", env=env)
    assert (run.code, run.outcome["outcome"]) == (0, "completed"), run.stderr[-2000:]
    assert run.outcome["stop_reason"] == "end_turn"
    assert "Hello from the stand-in." in run.texts()
    (turn,) = r.script.turns()
    assert kit.key_in(turn) == r.key  # the catalog's credential, from the caller's env
    assert "say hello" in turn.text
    home_files = {p.name for p in r.home.iterdir()}
    assert home_files, "the agent keeps its state under the HOME it was given"


@ALL
async def test_auth_required_without_a_key(tmp_path: Path, kit: Kit) -> None:
    # As a new user has it: no key and no provider settings (a provider of one's own, or
    # gemini-cli's gateway base URL, makes the agent take any key or none at all).
    async with rig(tmp_path, kit) as r:
        r.agents_file(key=False, pointed=False)
        run = await vm_agent_prompt(r, "hello?", env=_env_without_keys())
    assert run.code == 1
    assert (run.outcome["outcome"], run.outcome.get("error_code")) == ("auth_required", -32000)
    advertised = {m["id"] for m in run.outcome["auth_methods"]}
    assert advertised >= set(kit.auth_methods), advertised
    assert bool(advertised) == bool(kit.auth_methods)  # claude-agent-acp: none
    assert r.script.turns() == []  # refused before any model call


def _env_without_keys() -> dict[str, str]:
    from tests.daemon.harness import base_env

    keys = {kit.key_var for kit in KITS.values()} | {"CODEX_API_KEY", "GOOGLE_API_KEY"}
    return {k: v for k, v in base_env().items() if k not in keys}
