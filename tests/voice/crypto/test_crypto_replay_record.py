"""ReplayGuard.check: its answer says when a call is new (so the journal is rewritten), and a
check without recording remembers nothing (the controller records only pinned senders)."""

from __future__ import annotations

import pytest

from voice.crypto.envelope import EnvelopeHeader
from voice.crypto.replay import ReplayGuard
from voice.errors import BadEnvelope

SENDER = b"\x01" * 32


def header(call: bytes, seq: int, now: float) -> EnvelopeHeader:
    return EnvelopeHeader(call_id=call, seq=seq, timestamp_ms=int(now * 1000))


def test_check_says_when_a_call_is_new_even_as_an_old_one_expires() -> None:
    now = [1_000.0]
    guard = ReplayGuard(clock=lambda: now[0], max_age=60.0)
    assert guard.check(SENDER, header(b"\x02" * 16, 0, now[0])) is True
    assert guard.check(SENDER, header(b"\x02" * 16, 1, now[0])) is False
    now[0] += 120.0  # the first call expires as the second one starts: the size stays 1
    assert guard.check(SENDER, header(b"\x03" * 16, 0, now[0])) is True
    assert len(guard) == 1
    assert [entry[1] for entry in guard.remembered()] == [b"\x03" * 16]


def test_check_without_recording_remembers_nothing() -> None:
    guard = ReplayGuard(clock=lambda: 1_000.0, max_calls=1)
    first = header(b"\x02" * 16, 5, 1_000.0)
    for _ in range(3):
        assert guard.check(SENDER, first, record=False) is True
    assert len(guard) == 0
    guard.check(SENDER, first)
    with pytest.raises(BadEnvelope):  # now it is a replay
        guard.check(SENDER, first, record=False)
    later = header(b"\x02" * 16, 9, 1_000.0)
    assert guard.check(SENDER, later, record=False) is False
    guard.check(SENDER, later)  # not recorded by the look-ahead: still accepted once
    with pytest.raises(BadEnvelope):  # full: a new call is refused either way
        guard.check(SENDER, header(b"\x04" * 16, 0, 1_000.0), record=False)


def test_a_stranger_s_call_that_became_live_is_not_evicted_by_a_flood_of_strangers() -> None:
    """A first contact's call starts in the pool that evicts; once its envelopes come as a
    live call's (solicited), it moves out of eviction's reach. Else 256 offers from fresh keys
    (a server can mint them) pushed its window out, and its earlier envelopes passed again."""
    now = [1_000.0]
    guard = ReplayGuard(clock=lambda: now[0], max_unsolicited=8, max_unsolicited_per_sender=1)
    call = b"\x05" * 16
    guard.check(SENDER, header(call, 0, now[0]), solicited=False)  # the offer of a stranger
    guard.check(SENDER, header(call, 1, now[0]), solicited=True, live=True)  # taken: live
    for i in range(32):  # strangers' offers fill the evicting pool several times over
        guard.check(bytes([i + 2]) * 32, header(bytes([i]) * 16, 0, now[0]), solicited=False)
    for seq in (0, 1):
        with pytest.raises(BadEnvelope):
            guard.check(SENDER, header(call, seq, now[0]), solicited=True)
    entry = guard.entry(SENDER, call)
    assert entry is not None and entry[3] is True  # the journal learns it as solicited


def test_a_stranger_s_ringing_call_stays_where_strangers_cannot_fill_the_memory() -> None:
    """Envelopes of a call that rings (identity-sealed, solicited since the call is known)
    do not move it: else strangers' calls, rung and cancelled, would fill the pool that never
    evicts and refuse every contact's new call."""
    now = [1_000.0]
    guard = ReplayGuard(clock=lambda: now[0], max_calls=4, max_unsolicited=8)
    for i in range(8):  # eight strangers ring and cancel
        stranger, call = bytes([i + 2]) * 32, bytes([i]) * 16
        guard.check(stranger, header(call, 0, now[0]), solicited=False)
        guard.check(stranger, header(call, 1, now[0]), solicited=True)  # the cancel
    assert guard.check(SENDER, header(b"\x09" * 16, 0, now[0]), solicited=True)  # a contact
