"""Sealed envelopes (round trips, any-byte tamper, wrong recipient) and the ReplayGuard."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.crypto.envelope import (
    ENVELOPE_OVERHEAD,
    EnvelopeHeader,
    open_envelope,
    seal,
)
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import SMALL_ORDER_POINTS
from voice.crypto.replay import ReplayGuard
from voice.errors import BadEnvelope, BadPublicKey, VoiceError

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
EVE = Identity.from_seed(b"e" * 32)
CALL = bytes(range(16))
T0 = 1_700_000_000.0


def header(seq: int = 0, ts: float = T0, call_id: bytes = CALL) -> EnvelopeHeader:
    return EnvelopeHeader(call_id=call_id, seq=seq, timestamp_ms=int(ts * 1000))


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@settings(max_examples=50, deadline=None)
@given(
    payload=st.binary(max_size=2000),
    call_id=st.binary(min_size=16, max_size=16),
    seq=st.integers(0, 2**64 - 1),
    ts=st.integers(0, 2**64 - 1),
)
def test_round_trip(payload: bytes, call_id: bytes, seq: int, ts: int) -> None:
    h = EnvelopeHeader(call_id=call_id, seq=seq, timestamp_ms=ts)
    data = seal(ALICE, BOB.public_key, h, payload)
    assert len(data) == len(payload) + ENVELOPE_OVERHEAD
    opened = open_envelope(BOB, data)
    assert (opened.sender_key, opened.header, opened.payload) == (ALICE.public_key, h, payload)


def test_flip_any_byte_is_rejected() -> None:
    data = seal(ALICE, BOB.public_key, header(5), b"hello bob")
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            with pytest.raises(BadEnvelope):
                open_envelope(BOB, bytes(bad))


def test_truncated_or_extended_is_rejected() -> None:
    data = seal(ALICE, BOB.public_key, header(), b"payload")
    for n in range(len(data)):
        with pytest.raises(BadEnvelope):
            open_envelope(BOB, data[:n])
    with pytest.raises(BadEnvelope):
        open_envelope(BOB, data + b"\x00")


def test_wrong_recipient_is_rejected() -> None:
    data = seal(ALICE, BOB.public_key, header(), b"for bob only")
    with pytest.raises(BadEnvelope):
        open_envelope(EVE, data)


def test_reflection_is_rejected() -> None:
    """A->B sent back to A as if B wrote it: same box key, but the bound identities differ."""
    data = seal(ALICE, BOB.public_key, header(), b"offer")
    reflected = data[:1] + BOB.public_key + data[33:]
    with pytest.raises(BadEnvelope):
        open_envelope(ALICE, reflected)


def test_resealed_under_other_sender_is_rejected() -> None:
    """Eve cannot pass her own envelope off as Alice's by swapping the clear sender field."""
    data = seal(EVE, BOB.public_key, header(), b"trust me")
    with pytest.raises(BadEnvelope):
        open_envelope(BOB, data[:1] + ALICE.public_key + data[33:])


def test_negated_sender_encoding_is_rejected() -> None:
    """-A maps to the same X25519 key as A; the bound sender key refuses it."""
    data = seal(ALICE, BOB.public_key, header(), b"x")
    neg = bytearray(ALICE.public_key)
    neg[31] ^= 0x80
    with pytest.raises(BadEnvelope):
        open_envelope(BOB, data[:1] + bytes(neg) + data[33:])


def test_garbage_sender_keys_are_opaque() -> None:
    data = seal(ALICE, BOB.public_key, header(), b"x")
    for key in (*SMALL_ORDER_POINTS, b"\xff" * 32):
        with pytest.raises(BadEnvelope):
            open_envelope(BOB, data[:1] + key + data[33:])


def test_sealing_to_a_bad_key_fails_loudly() -> None:
    with pytest.raises(BadPublicKey):
        seal(ALICE, b"short", header(), b"x")
    with pytest.raises(BadPublicKey):
        seal(ALICE, SMALL_ORDER_POINTS[0], header(), b"x")


def test_bad_envelope_is_a_voice_error() -> None:
    assert issubclass(BadEnvelope, VoiceError)


def test_header_validation() -> None:
    with pytest.raises(ValueError):
        EnvelopeHeader(call_id=b"short", seq=0, timestamp_ms=0)
    with pytest.raises(ValueError):
        EnvelopeHeader(call_id=CALL, seq=-1, timestamp_ms=0)
    with pytest.raises(ValueError):
        EnvelopeHeader(call_id=CALL, seq=0, timestamp_ms=2**64)


def test_nonce_is_fresh() -> None:
    a = seal(ALICE, BOB.public_key, header(), b"same")
    b = seal(ALICE, BOB.public_key, header(), b"same")
    assert a != b


# ---- ReplayGuard -------------------------------------------------------------------------------


def test_replay_is_rejected() -> None:
    guard = ReplayGuard(clock=Clock())
    guard.check(ALICE.public_key, header(0))
    guard.check(ALICE.public_key, header(1))
    for seq in (0, 1):
        with pytest.raises(BadEnvelope):
            guard.check(ALICE.public_key, header(seq))


def test_reordering_within_window_is_accepted_beyond_is_rejected() -> None:
    guard = ReplayGuard(clock=Clock(), window=8)
    guard.check(ALICE.public_key, header(10))
    guard.check(ALICE.public_key, header(5))  # late but inside the window
    guard.check(ALICE.public_key, header(3))  # offset 7: the last slot
    with pytest.raises(BadEnvelope):
        guard.check(ALICE.public_key, header(2))  # offset 8: beyond the window
    with pytest.raises(BadEnvelope):
        guard.check(ALICE.public_key, header(5))
    guard.check(ALICE.public_key, header(100))
    with pytest.raises(BadEnvelope):
        guard.check(ALICE.public_key, header(10))


def test_windows_are_per_sender_and_call() -> None:
    guard = ReplayGuard(clock=Clock())
    guard.check(ALICE.public_key, header(0))
    guard.check(EVE.public_key, header(0))
    guard.check(ALICE.public_key, header(0, call_id=b"\x01" * 16))


def test_maximum_age() -> None:
    clock = Clock()
    guard = ReplayGuard(clock=clock, max_age=60.0)
    guard.check(ALICE.public_key, header(0, ts=T0 - 59.9))
    with pytest.raises(BadEnvelope):
        guard.check(ALICE.public_key, header(1, ts=T0 - 60.1))
    with pytest.raises(BadEnvelope):  # too far in the future
        guard.check(ALICE.public_key, header(2, ts=T0 + 61))
    guard2 = ReplayGuard(clock=clock, max_age=5.0)
    with pytest.raises(BadEnvelope):
        guard2.check(ALICE.public_key, header(0, ts=T0 - 6))


def test_replayed_offer_of_ended_call_is_refused_then_expires() -> None:
    clock = Clock()
    guard = ReplayGuard(clock=clock, max_age=60.0)
    offer = header(0, ts=T0)
    guard.check(ALICE.public_key, offer)
    for later in (1.0, 30.0, 59.0):  # the call is long over; the server replays the offer
        clock.now = T0 + later
        with pytest.raises(BadEnvelope):
            guard.check(ALICE.public_key, offer)
    clock.now = T0 + 61  # now too old: refused by age, and the memory may be released
    with pytest.raises(BadEnvelope):
        guard.check(ALICE.public_key, offer)
    guard.check(ALICE.public_key, header(0, ts=clock.now, call_id=b"\x02" * 16))
    assert len(guard) == 1  # the old call's entry was dropped


def test_memory_is_bounded_and_fails_closed() -> None:
    clock = Clock()
    guard = ReplayGuard(clock=clock, max_calls=10, max_calls_per_sender=4)
    for i in range(4):
        guard.check(EVE.public_key, header(0, call_id=bytes([i]) * 16))
    with pytest.raises(BadEnvelope):  # Eve used her quota
        guard.check(EVE.public_key, header(0, call_id=b"\x09" * 16))
    guard.check(ALICE.public_key, header(0))  # others still get through
    senders = [Identity.from_seed(bytes([i]) * 32).public_key for i in range(5)]
    for s in senders:
        guard.check(s, header(0))
    assert len(guard) == 10
    with pytest.raises(BadEnvelope):
        guard.check(BOB.public_key, header(0))
    for s in senders:  # and nothing already remembered was forgotten
        with pytest.raises(BadEnvelope):
            guard.check(s, header(0))
    clock.now += 121
    guard.check(BOB.public_key, header(0, ts=clock.now))


def test_guard_parameters_are_validated() -> None:
    with pytest.raises(ValueError):
        ReplayGuard(max_age=0)
    with pytest.raises(ValueError):
        ReplayGuard(window=0)


def test_replay_guard_jump_far_ahead_stays_bounded_and_still_refuses_replays() -> None:
    """A sequence jump of 2**62 must cost nothing and leave the window working."""
    from voice.crypto.envelope import EnvelopeHeader
    from voice.crypto.replay import ReplayGuard

    now = 1_000.0
    guard = ReplayGuard(clock=lambda: now)
    sender, call_id = b"\x01" * 32, b"\x02" * 16

    def header(seq: int) -> EnvelopeHeader:
        return EnvelopeHeader(call_id=call_id, seq=seq, timestamp_ms=int(now * 1000))

    guard.check(sender, header(0))
    guard.check(sender, header(2**62))
    guard.check(sender, header(2**62 - 3))  # inside the window, not seen: accepted
    for seq in (2**62, 2**62 - 3, 0):  # replays, and one far behind the window
        with pytest.raises(BadEnvelope):
            guard.check(sender, header(seq))
