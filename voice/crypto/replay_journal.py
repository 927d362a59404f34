"""The replay memory on disk, so that a restart does not reopen the replay window.

A ``ReplayGuard`` refuses an envelope it has seen; after a restart it has seen nothing, and for
``max_age`` (60 s) a replayed offer would pass the age check and ring the phone (it could never
connect: the replayer lacks the caller's ephemeral key). The journal keeps (sender key, call id,
expiry, pool) of recent calls, one line each, appended as the calls are seen::

    <base64 sender key> <base64 call id> <expires, seconds since the epoch> <s | u>\\n

Appends are incremental (a line per new call, ``O_APPEND``, fsync'ed), and the phone makes them
off its event loop. When the file holds many more lines than calls still remembered it is
compacted: rewritten atomically (a new 0600 file renamed over it) under an exclusive lock, so a
second process appending at the same time (``voice listen`` and ``voice call``) loses nothing
but lines of calls that expired. The file must be ours and 0600 (checked on the open
descriptor, never through a symlink): another user's journal is refused with InsecureKeyFile. A
malformed line is skipped: the journal only narrows a window that the age check already bounds.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from voice.crypto.privatefile import (
    check_secret_file_mode,
    locked,
    read_secret_file,
    replace_private_file,
)
from voice.crypto.replay import Entry

__all__ = ["ReplayJournal"]

log = logging.getLogger(__name__)
COMPACT_SLACK = 1024  # lines beyond twice the live entries before the file is rewritten


def _line(entry: Entry) -> bytes:
    sender, call_id, expires, solicited = entry
    return b"%s %s %.3f %s\n" % (
        base64.b64encode(sender),
        base64.b64encode(call_id),
        expires,
        b"s" if solicited else b"u",
    )


def _parse(line: bytes) -> Entry:
    sender, call_id, expires, pool = line.split()
    if pool not in (b"s", b"u"):
        raise ValueError("bad pool")
    return (
        base64.b64decode(sender, validate=True),
        base64.b64decode(call_id, validate=True),
        float(expires),
        pool == b"s",
    )


class ReplayJournal:
    """One journal file. Not thread-safe: the phone uses it from one writer at a time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lines = 0  # lines in the file, as far as we know (for compaction)

    def load(self) -> list[Entry]:
        """The entries in the file (expired ones included; the guard skips them)."""
        try:
            raw = read_secret_file(self.path)
        except FileNotFoundError:
            return []
        entries: list[Entry] = []
        bad = 0
        for line in raw.splitlines():
            try:
                entries.append(_parse(line))
            except (ValueError, binascii.Error):
                bad += 1
        if bad:
            log.warning("skipped %d malformed lines of the replay journal %s", bad, self.path)
        self.lines = len(entries) + bad
        return entries

    def append(self, entries: Sequence[Entry]) -> None:
        """Add these calls at the end of the file, and sync it."""
        if not entries:
            return
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        with locked(self.path, shared=True):  # appenders share; a compaction waits for them
            fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                check_secret_file_mode(self.path, os.fstat(fd))
                view = memoryview(b"".join(_line(e) for e in entries))
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        self.lines += len(entries)

    def needs_compaction(self, live: int) -> bool:
        return self.lines > 2 * live + COMPACT_SLACK

    def compact(self, live: Sequence[Entry], now: float) -> None:
        """Rewrite the file with ``live`` plus whatever another process appended meanwhile,
        dropping what expired before ``now``."""
        with locked(self.path):
            keep = {(e[0], e[1]): e for e in self.load() if e[2] >= now}
            keep.update({(e[0], e[1]): e for e in live if e[2] >= now})
            replace_private_file(self.path, b"".join(_line(e) for e in keep.values()))
            self.lines = len(keep)
