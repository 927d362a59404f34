"""The phone's replay memory kept on disk, written off the event loop.

:class:`JournalWriter` takes each new entry of the replay guard
(:class:`~voice.call.inbound.SaveJournal`), batches what arrives while a write is under way,
and appends it in a worker thread (:class:`~voice.crypto.replay_journal.ReplayJournal`),
compacting the file now and then. A failed write is logged: the call goes on, and only a restart
would reopen the window that entry closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from voice.crypto.replay import Entry, ReplayGuard
from voice.crypto.replay_journal import ReplayJournal
from voice.errors import VoiceError

__all__ = ["JournalWriter"]

log = logging.getLogger("voice.phone")


class JournalWriter:
    def __init__(self, path: Path, replay: ReplayGuard, clock: Callable[[], float]) -> None:
        self._journal = ReplayJournal(path)
        self._replay = replay
        self._clock = clock
        self._batch: list[Entry] = []
        self._task: asyncio.Task[None] | None = None

    def restore(self) -> None:
        """Refuse every call the journal remembers (at start)."""
        self._replay.refuse(self._journal.load())

    def add(self, entry: Entry) -> None:
        self._batch.append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write())

    async def flush(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _write(self) -> None:
        journal, replay = self._journal, self._replay
        while self._batch:
            batch, self._batch = self._batch, []
            live = replay.remembered() if journal.needs_compaction(len(replay)) else None
            try:
                await asyncio.to_thread(journal.append, batch)
                if live is not None:
                    await asyncio.to_thread(journal.compact, live, self._clock())
            except (OSError, VoiceError) as exc:
                log.warning("could not write the replay journal: %s", type(exc).__name__)
