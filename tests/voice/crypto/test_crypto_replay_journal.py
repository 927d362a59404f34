"""The replay memory survives a restart: incremental journal, closed windows, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voice.crypto.envelope import EnvelopeHeader
from voice.crypto.replay import ReplayGuard
from voice.crypto.replay_journal import COMPACT_SLACK, ReplayJournal
from voice.errors import BadEnvelope, InsecureKeyFile

NOW = 1_000.0
SENDER, CALL = b"\x01" * 32, b"\x02" * 16


def header(seq: int, call: bytes = CALL) -> EnvelopeHeader:
    return EnvelopeHeader(call_id=call, seq=seq, timestamp_ms=int(NOW * 1000))


def test_a_restored_guard_refuses_every_envelope_of_a_remembered_call(tmp_path: Path) -> None:
    before = ReplayGuard(clock=lambda: NOW)
    before.check(SENDER, header(0))
    journal = ReplayJournal(tmp_path / "replay.json")
    entry = before.entry(SENDER, CALL)
    assert entry is not None and entry[3] is True  # the solicited pool
    journal.append([entry])
    assert journal.path.stat().st_mode & 0o777 == 0o600

    after = ReplayGuard(clock=lambda: NOW)
    after.refuse(ReplayJournal(journal.path).load())
    for seq in (0, 1, 63, 64, 2**64 - 1):  # the old one, and new ones of that dead call
        with pytest.raises(BadEnvelope):
            after.check(SENDER, header(seq))
    after.check(SENDER, header(0, call=b"\x03" * 16))  # other calls are unaffected


def test_appends_are_incremental_and_two_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    listen, call = ReplayJournal(path), ReplayJournal(path)
    listen.append([(SENDER, CALL, NOW + 60, True)])
    size = path.stat().st_size
    call.append([(SENDER, b"\x03" * 16, NOW + 60, False)])
    assert path.stat().st_size > size  # appended, not rewritten
    loaded = ReplayJournal(path).load()
    assert loaded == [(SENDER, CALL, NOW + 60, True), (SENDER, b"\x03" * 16, NOW + 60, False)]


def test_compaction_keeps_live_entries_and_what_another_process_appended(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    ours, theirs = ReplayJournal(path), ReplayJournal(path)
    dead = [(SENDER, os.urandom(16), NOW - 1, True) for _ in range(COMPACT_SLACK + 10)]
    ours.append(dead)
    live = [(SENDER, CALL, NOW + 60, True)]
    ours.append(live)
    theirs.append([(SENDER, b"\x04" * 16, NOW + 30, False)])
    assert ours.needs_compaction(len(live))
    ours.compact(live, NOW)
    assert set(ReplayJournal(path).load()) == {(SENDER, b"\x04" * 16, NOW + 30, False), *live}
    assert not ours.needs_compaction(len(live))


def test_expired_entries_are_not_restored(tmp_path: Path) -> None:
    journal = ReplayJournal(tmp_path / "replay.json")
    journal.append([(SENDER, CALL, NOW - 1, True)])
    guard = ReplayGuard(clock=lambda: NOW)
    guard.refuse(journal.load())
    assert len(guard) == 0


@pytest.mark.parametrize("content", ["", "{", "!! AA== 1 s", "AQ== AQ== x s", "AQ== AQ== 1 q"])
def test_malformed_lines_are_skipped(tmp_path: Path, content: str) -> None:
    path = tmp_path / "replay.json"
    path.write_text(content + "\n")
    os.chmod(path, 0o600)
    assert ReplayJournal(path).load() == []
    assert ReplayJournal(tmp_path / "missing.json").load() == []


def test_a_journal_others_can_write_or_a_symlink_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    journal = ReplayJournal(path)
    journal.append([(SENDER, CALL, NOW, True)])
    os.chmod(path, 0o666)
    with pytest.raises(InsecureKeyFile):
        journal.load()
    with pytest.raises(InsecureKeyFile):
        journal.append([(SENDER, CALL, NOW, True)])
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    link = tmp_path / "linked.json"
    link.symlink_to(victim)
    with pytest.raises(OSError):  # O_NOFOLLOW: never appends through a planted symlink
        ReplayJournal(link).append([(SENDER, CALL, NOW, True)])
    assert victim.read_text() == "untouched"
