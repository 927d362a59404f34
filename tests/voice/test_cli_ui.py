"""voice.cli.ui and the incoming-call line: questions never share a line with other news, and a
caller is introduced with what the contact book knows about them."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from voice.cli.listen import caller_trust
from voice.cli.ui import LineReader, ask_yes_no, say
from voice.crypto.contacts import ContactBook, KeySource
from voice.crypto.identity import Identity
from voice.errors import KeyChangedError


@pytest.fixture
def silent_pipe() -> Iterator[io.TextIOWrapper]:
    """Standard input that never answers (the user is away from the keyboard)."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(read_fd)
    try:
        yield stream
    finally:
        stream.close()
        os.close(write_fd)


async def test_news_during_a_question_starts_on_its_own_line(
    silent_pipe: io.TextIOWrapper,
) -> None:
    out = io.StringIO()
    question = asyncio.ensure_future(
        ask_yes_no(out, "Accept the call from alice?", LineReader(silent_pipe))
    )
    await asyncio.sleep(0.01)
    say(out, "Missed call from alice (cancelled).")  # the caller gave up meanwhile
    question.cancel()
    with pytest.raises(asyncio.CancelledError):
        await question
    say(out, "Waiting for the next call.")
    assert out.getvalue().splitlines() == [
        "Accept the call from alice? [y/N] ",
        "Missed call from alice (cancelled).",
        "Waiting for the next call.",
    ]


async def test_a_cancelled_question_ends_its_line(silent_pipe: io.TextIOWrapper) -> None:
    out = io.StringIO()
    question = asyncio.ensure_future(
        ask_yes_no(out, "Does bob read the same words?", LineReader(silent_pipe))
    )
    await asyncio.sleep(0.01)
    question.cancel()
    with pytest.raises(asyncio.CancelledError):
        await question
    say(out, "Call ended: bob hung up.")
    assert out.getvalue() == "Does bob read the same words? [y/N] \nCall ended: bob hung up.\n"


async def test_a_piped_answer_ends_the_line_and_counts(tmp_path: Path) -> None:
    answers = tmp_path / "answers"
    answers.write_text("y\nno\n")
    out = io.StringIO()
    with answers.open() as stream:
        lines = LineReader(stream)
        assert await ask_yes_no(out, "First?", lines)
        assert not await ask_yes_no(out, "Second?", lines)
        assert not await ask_yes_no(out, "Third?", lines)  # end of input is "no"
    assert out.getvalue().splitlines() == ["First? [y/N] ", "Second? [y/N] ", "Third? [y/N] "]


def test_the_incoming_call_line_says_what_the_contact_book_knows(tmp_path: Path) -> None:
    book = ContactBook(tmp_path / "contacts.json")
    key = Identity.generate().public_key
    assert caller_trust(book.get("alice")).startswith("new")  # never heard of
    book.check("alice", key, source=KeySource.OFFER)  # pinned when their first call came in
    assert caller_trust(book.get("alice")).startswith("new")
    book.note_connected("alice", key)
    assert caller_trust(book.get("alice")) == "unverified contact; 1 earlier call with this key"
    book.mark_verified("alice")
    book.note_connected("alice", key)
    assert caller_trust(book.get("alice")) == "verified contact; 2 earlier calls with this key"
    book.check("bob", Identity.generate().public_key)  # dialled by us: not new, not verified
    assert caller_trust(book.get("bob")) == "unverified contact; 0 earlier calls with this key"
    with pytest.raises(KeyChangedError):  # someone presents another key under alice's name
        book.check("alice", Identity.generate().public_key, source=KeySource.OFFER)
    assert "another key was also presented" in caller_trust(book.get("alice"))


async def test_news_then_an_answer_leave_no_blank_line(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    with os.fdopen(read_fd) as stream:
        question = asyncio.ensure_future(ask_yes_no(out, "Accept?", LineReader(stream)))
        await asyncio.sleep(0.01)
        say(out, "online again")  # news while the question waits
        os.write(write_fd, b"y\n")
        assert await question
        say(out, "Connected")
    os.close(write_fd)
    assert out.getvalue() == "Accept? [y/N] \nonline again\nConnected\n"
