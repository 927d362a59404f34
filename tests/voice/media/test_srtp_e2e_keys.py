"""SrtpContext: SRTP keyed directly from the e2e agreement (AES-256-GCM, no DTLS)."""

from __future__ import annotations

import os

import pytest
from aiortc.rtp import RtcpRrPacket, RtpPacket

from voice.errors import MediaError, MediaKeyError
from voice.media.srtp import KEY_SALT_LENGTH, TAG_LENGTH, SrtpContext


def rtp(seq: int, payload: bytes = b"\x11" * 80, ssrc: int = 0x1234_5678) -> bytes:
    return RtpPacket(
        payload_type=111, sequence_number=seq, timestamp=seq * 960, ssrc=ssrc, payload=payload
    ).serialize()


@pytest.fixture
def pair() -> tuple[SrtpContext, SrtpContext]:
    a_to_b, b_to_a = os.urandom(44), os.urandom(44)
    return SrtpContext(a_to_b, b_to_a), SrtpContext(b_to_a, a_to_b)


def test_round_trip_rtp_and_rtcp(pair: tuple[SrtpContext, SrtpContext]) -> None:
    alice, bob = pair
    for seq in range(5):
        packet = rtp(seq)
        wire = alice.protect(packet)
        assert len(wire) == len(packet) + TAG_LENGTH
        assert packet[12:] not in wire  # payload encrypted
        assert bob.unprotect(wire) == packet
    report = bytes(RtcpRrPacket(ssrc=7))
    assert bob.unprotect_rtcp(alice.protect_rtcp(report)) == report
    assert alice.unprotect(bob.protect(rtp(1, ssrc=99))) == rtp(1, ssrc=99)
    assert bob.counters.auth_failures == 0


def test_every_flipped_byte_is_refused_and_counted(pair: tuple[SrtpContext, SrtpContext]) -> None:
    alice, bob = pair
    for seq in range(30):  # a fresh sequence number each time so no replay check interferes
        wire = bytearray(alice.protect(rtp(seq)))
        wire[12 + (seq * 7) % (len(wire) - 12)] ^= 0x01  # flip one bit after the header
        assert bob.unprotect(bytes(wire)) is None
    assert bob.counters.auth_failures == 30
    # a header bit is authenticated too (the SSRC here)
    wire = bytearray(alice.protect(rtp(100)))
    wire[11] ^= 0x80
    assert bob.unprotect(bytes(wire)) is None
    assert bob.counters.auth_failures == 31


def test_wrong_key_never_decrypts() -> None:
    sender = SrtpContext(os.urandom(44), os.urandom(44))
    stranger = SrtpContext(os.urandom(44), os.urandom(44))
    for seq in range(10):
        assert stranger.unprotect(sender.protect(rtp(seq))) is None
        assert stranger.unprotect_rtcp(sender.protect_rtcp(bytes(RtcpRrPacket(ssrc=1)))) is None
    assert stranger.counters.auth_failures == 20


def test_replay_is_refused(pair: tuple[SrtpContext, SrtpContext]) -> None:
    alice, bob = pair
    wire = alice.protect(rtp(1))
    assert bob.unprotect(wire) is not None
    assert bob.unprotect(wire) is None
    assert bob.counters.replays == 1


def test_garbage_is_counted_not_raised(pair: tuple[SrtpContext, SrtpContext]) -> None:
    _, bob = pair
    for junk in (b"", b"\x80", b"\x80" * 11, os.urandom(40), b"\x80\x6f" + os.urandom(2000)):
        assert bob.unprotect(junk) is None
        assert bob.unprotect_rtcp(junk) is None
    counters = bob.counters
    assert counters.auth_failures + counters.replays + counters.malformed == 10


@pytest.mark.parametrize(
    "bad",
    [b"", os.urandom(43), os.urandom(45), os.urandom(30)],
    ids=lambda key: f"{len(key)}-bytes",  # the same ids in every xdist worker
)
def test_key_length_is_checked(bad: bytes) -> None:
    with pytest.raises(MediaKeyError, match=str(KEY_SALT_LENGTH)):
        SrtpContext(bad, os.urandom(44))
    with pytest.raises(MediaKeyError):
        SrtpContext(os.urandom(44), bad)


def test_key_type_and_direction_reuse_are_refused() -> None:
    key = os.urandom(44)
    with pytest.raises(MediaKeyError):
        SrtpContext(bytearray(key), os.urandom(44))  # type: ignore[arg-type]
    with pytest.raises(MediaKeyError, match="differ"):
        SrtpContext(key, key)


def test_close_drops_the_sessions(pair: tuple[SrtpContext, SrtpContext]) -> None:
    alice, bob = pair
    wire = alice.protect(rtp(1))
    bob.close()
    bob.close()  # idempotent
    assert bob.closed
    assert bob.unprotect(wire) is None
    with pytest.raises(MediaError):
        bob.protect(rtp(2))
