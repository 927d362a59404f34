"""The replay memory survives a restart: journal round trip, closed windows, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voice.crypto.envelope import EnvelopeHeader
from voice.crypto.replay import ReplayGuard
from voice.crypto.replay_journal import load_journal, save_journal
from voice.errors import BadEnvelope

NOW = 1_000.0
SENDER, CALL = b"\x01" * 32, b"\x02" * 16


def header(seq: int, call: bytes = CALL) -> EnvelopeHeader:
    return EnvelopeHeader(call_id=call, seq=seq, timestamp_ms=int(NOW * 1000))


def test_a_restored_guard_refuses_every_envelope_of_a_remembered_call(tmp_path: Path) -> None:
    before = ReplayGuard(clock=lambda: NOW)
    before.check(SENDER, header(0))
    path = tmp_path / "replay.json"
    save_journal(path, before.remembered())
    assert path.stat().st_mode & 0o777 == 0o600

    after = ReplayGuard(clock=lambda: NOW)
    after.refuse(load_journal(path))
    for seq in (0, 1, 63, 64, 2**64 - 1):  # the old one, and new ones of that dead call
        with pytest.raises(BadEnvelope):
            after.check(SENDER, header(seq))
    after.check(SENDER, header(0, call=b"\x03" * 16))  # other calls are unaffected


def test_expired_entries_are_not_restored(tmp_path: Path) -> None:
    path = tmp_path / "replay.json"
    save_journal(path, [(SENDER, CALL, NOW - 1)])
    guard = ReplayGuard(clock=lambda: NOW)
    guard.refuse(load_journal(path))
    assert len(guard) == 0


@pytest.mark.parametrize("content", ["", "{", '{"calls": [["!!", "AA==", 1]]}', '{"x": 1}', "[]"])
def test_an_unreadable_journal_counts_as_empty(tmp_path: Path, content: str) -> None:
    path = tmp_path / "replay.json"
    path.write_text(content)
    assert load_journal(path) == []
    assert load_journal(tmp_path / "missing.json") == []


def test_saving_never_writes_through_a_planted_temporary_file(tmp_path: Path) -> None:
    # The old code opened ".replay.json.<pid>.tmp" with O_CREAT|O_TRUNC: it followed a symlink
    # there and kept the mode of a file already there.
    path = tmp_path / "replay.json"
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / f".replay.json.{os.getpid()}.tmp").symlink_to(victim)
    save_journal(path, [(SENDER, CALL, NOW)])
    assert victim.read_text() == "untouched"
    assert not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600
    assert load_journal(path) == [(SENDER, CALL, NOW)]
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp" and not p.is_symlink()] == []
