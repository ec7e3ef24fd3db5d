"""The prompt book alone: one run per prompt id, one ending shared by its callers."""

from __future__ import annotations

import anyio
import pytest

from vm_agent.core.vocabulary import OutcomeKind
from vm_agent.session.outcome import Outcome
from vm_agent.session.prompt_book import PromptBook, SessionRefused

pytestmark = pytest.mark.anyio

BLOCKS = [{"type": "text", "text": "hi"}]


def outcome(prompt_id: str) -> Outcome:
    return Outcome(session_id="s", prompt_id=prompt_id, outcome=OutcomeKind.COMPLETED)


async def test_callers_of_one_id_share_its_outcome_and_the_content_goes_once() -> None:
    book = PromptBook()
    wait = book.ask("p1", BLOCKS)
    assert book.waiting("p1") is wait
    assert book.take("p1") == BLOCKS
    with pytest.raises(KeyError):
        book.take("p1")  # sent once
    endings: list[Outcome] = []
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(lambda: _collect(book, "p1", wait, endings))
        await anyio.wait_all_tasks_blocked()
        book.finish(outcome("p1"))
    assert endings == [outcome("p1")] * 2
    assert book.outcomes == {"p1": outcome("p1")} and book.waiting("p1") is None


async def test_a_refusal_reaches_every_waiting_prompt() -> None:
    book = PromptBook()
    waits = {pid: book.ask(pid, BLOCKS) for pid in ("p1", "p2")}
    book.refuse_all("the session failed inside")
    for pid, wait in waits.items():
        with pytest.raises(SessionRefused, match="failed inside"):
            await book.ending(pid, wait)
        assert book.waiting(pid) is None
    assert book.outcomes == {}


async def _collect(book: PromptBook, pid: str, wait: object, into: list[Outcome]) -> None:
    into.append(await book.ending(pid, wait))  # type: ignore[arg-type]
