"""Closing a group call cannot hang on a teardown step that waits for a vanished SFU or network:
each step has a bound, and a step that overran is logged by name."""

from __future__ import annotations

import asyncio
import logging

import pytest

from voice.group.session import within


async def test_a_step_that_never_ends_is_cut_at_its_bound_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled = asyncio.Event()

    async def waits_for_a_dead_sfu() -> None:
        try:
            await asyncio.Event().wait()  # an answer that never comes
        finally:
            cancelled.set()

    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING):
        await within(0.2, "the media", waits_for_a_dead_sfu())
    assert loop.time() - started < 2.0
    assert cancelled.is_set()  # cancelled, not left running
    assert "closing the media took over 0.2 s" in caplog.text


async def test_a_step_that_ends_in_time_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    done: list[bool] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        done.append(True)

    with caplog.at_level(logging.WARNING):
        await within(1.0, "the hearing", quick())
    assert done == [True] and "took over" not in caplog.text
