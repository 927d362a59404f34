"""RTCP BYE (RFC 3550 section 6.6) as an in-band hang-up: encoding, the strict parser, the
compound walker, and what the receiver does with a BYE and with the peer's first RTP packet."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import RtcpByePacket, RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtpPacket

from voice.media.jitter import JitterBuffer
from voice.media.opus import OpusDecoder
from voice.media.receiver import RtpReceiver
from voice.media.rtcp import (
    MAX_COMPOUND_PARTS,
    RTCP_BYE,
    RTCP_RR,
    MalformedRtcp,
    bye_packet,
    parse_bye,
    split_compound,
)
from voice.media.sender import PAYLOAD_TYPE

PEER = 0xC0FFEE01


def _bye(count: int, body: bytes, *, padding: bool = False) -> bytes:
    assert len(body) % 4 == 0
    return (
        struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, RTCP_BYE, len(body) // 4)
        + body
    )


def test_bye_round_trips_and_aiortc_reads_it_the_same() -> None:
    data = bye_packet(PEER)
    assert len(data) == 8
    [(packet_type, count, payload)] = split_compound(data)
    assert (packet_type, count) == (RTCP_BYE, 1)
    assert parse_bye(count, payload) == ((PEER,), b"")
    assert RtcpPacket.parse(data) == [RtcpByePacket(sources=[PEER])]


@pytest.mark.parametrize("reason", [b"x", b"bye", b"hung", b"hang up", bytes(range(1, 256))])
def test_a_reason_is_padded_with_null_octets_and_read_back(reason: bytes) -> None:
    data = bye_packet(PEER, reason)
    assert len(data) % 4 == 0
    [(_type, count, payload)] = split_compound(data)
    assert parse_bye(count, payload) == ((PEER,), reason)


def test_a_reason_longer_than_255_octets_is_refused() -> None:
    with pytest.raises(ValueError):
        bye_packet(PEER, bytes(256))


def test_a_compound_report_then_bye_splits_in_two() -> None:
    rr = bytes(RtcpRrPacket(ssrc=PEER, reports=[]))
    parts = split_compound(rr + bye_packet(PEER))
    assert [(t, c) for t, c, _ in parts] == [(RTCP_RR, 0), (RTCP_BYE, 1)]


def test_several_sources_and_count_zero() -> None:
    body = struct.pack("!III", 1, 2, 3)
    assert parse_bye(3, body) == ((1, 2, 3), b"")
    assert parse_bye(0, b"") == ((), b"")  # valid but names nobody


@pytest.mark.parametrize(
    ("count", "payload"),
    [
        (2, struct.pack("!I", PEER)),  # fewer sources than the count says
        (1, struct.pack("!I", PEER) + b"\x05abc"),  # reason runs past the packet
        (1, struct.pack("!I", PEER) + b"\x01a\x00\x01"),  # padding that is not null
        (1, struct.pack("!I", PEER) + b"\x01a\x00\x00" + bytes(4)),  # a whole word too many
        (1, struct.pack("!II", PEER, 7)),  # trailing words that are no reason
        (31, struct.pack("!I", PEER) * 30),
    ],
)
def test_malformed_byes_are_refused(count: int, payload: bytes) -> None:
    with pytest.raises(MalformedRtcp):
        parse_bye(count, payload)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bye_packet(PEER)[:-1],  # not 32-bit aligned
        b"\x40" + bye_packet(PEER)[1:],  # version 1
        struct.pack("!BBH", 0x81, RTCP_BYE, 5) + struct.pack("!I", PEER),  # length past the end
        _bye(1, struct.pack("!I", PEER) + b"\x00\x00\x00\x09", padding=True),  # padding > payload
        _bye(1, struct.pack("!I", PEER) + b"\x00\x00\x00\x00", padding=True),  # padding count 0
        bye_packet(PEER) * (MAX_COMPOUND_PARTS + 1),
    ],
)
def test_broken_compounds_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedRtcp):
        split_compound(data)


def test_padding_is_removed() -> None:
    data = _bye(1, struct.pack("!I", PEER) + b"\x00\x00\x00\x04", padding=True)
    [(_type, count, payload)] = split_compound(data)
    assert parse_bye(count, payload) == ((PEER,), b"")


def _receiver(blocks: list[RtcpReceiverInfo] | None = None) -> RtpReceiver:
    return RtpReceiver(
        sink=None,  # type: ignore[arg-type]  # never played
        decoder=OpusDecoder(),
        jitter=JitterBuffer(),
        remote_ssrc=PEER,
        on_report_block=(blocks.append if blocks is not None else lambda _b: None),
    )


async def test_the_receiver_hears_a_bye_from_the_peer_only() -> None:
    blocks: list[RtcpReceiverInfo] = []
    receiver = _receiver(blocks)
    block = RtcpReceiverInfo(
        ssrc=1, fraction_lost=0, packets_lost=0, highest_sequence=0, jitter=0, lsr=0, dlsr=0
    )
    rr = bytes(RtcpRrPacket(ssrc=PEER, reports=[block]))
    receiver.on_rtcp(rr + bye_packet(0x1234), 1.0)  # someone else leaving: not the peer
    assert not receiver.peer_said_bye.is_set() and len(blocks) == 1
    receiver.on_rtcp(rr + _bye(2, struct.pack("!I", PEER)), 2.0)  # malformed: counted, ignored
    assert not receiver.peer_said_bye.is_set()
    assert receiver.rtcp_bye_malformed == 1 and len(blocks) == 2  # the report still counted
    receiver.on_rtcp(rr[:-1], 3.0)  # broken framing: the whole compound is dropped
    assert receiver.rtcp_parse_errors == 1 and len(blocks) == 2
    receiver.on_rtcp(rr + bye_packet(PEER, b"bye"), 4.0)
    assert receiver.peer_said_bye.is_set() and len(blocks) == 3


async def test_first_packet_is_the_peers_first_rtp_packet() -> None:
    receiver = _receiver()

    def rtp(ssrc: int, seq: int, payload_type: int = PAYLOAD_TYPE) -> bytes:
        packet = RtpPacket(payload_type=payload_type, sequence_number=seq, ssrc=ssrc)
        packet.payload = b"\xf8\xff\xfe"
        return packet.serialize()

    receiver.on_rtp(rtp(0x1234, 1), 1.0)  # not the announced stream
    receiver.on_rtp(rtp(PEER, 1, payload_type=0), 1.5)  # nor the announced codec
    receiver.on_rtcp(bytes(RtcpRrPacket(ssrc=PEER, reports=[])), 1.7)  # RTCP is not RTP
    assert not receiver.first_packet.is_set() and receiver.last_rtp_at is None
    receiver.on_rtp(rtp(PEER, 2), 2.0)
    receiver.on_rtp(rtp(PEER, 3), 2.02)
    assert receiver.first_packet.is_set()
    assert receiver.first_packet_at == 2.0 and receiver.last_rtp_at == 2.02
