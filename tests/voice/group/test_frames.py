"""The encoded-frame hooks, and the aiortc internals they rest on (voice/group/frames.py).

If aiortc changes how a sender packs pre-encoded packets, or renames the receiver's jitter
buffer, or calls it differently, these fail by name instead of group calls going silent.
"""

from __future__ import annotations

import asyncio
import inspect

import aiortc
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.opus import OpusEncoder as AiortcOpusEncoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from voice.errors import CodecError
from voice.group.frames import (
    FRAME_S,
    FRAME_TICKS,
    JITTER_BUFFER,
    TIME_BASE,
    EncodedAudioTrack,
    tap_receiver,
)


def test_aiortc_version_is_the_one_the_hooks_were_checked_against() -> None:
    assert aiortc.__version__ == "1.16.0", "re-check voice/group/frames.py against this aiortc"


def test_the_sender_packs_packets_and_encodes_only_frames() -> None:
    source = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "isinstance(data, Frame)" in source
    assert "self.__encoder.pack(data)" in source


async def test_aiortc_opus_pack_sends_the_payload_as_is_at_the_packets_time() -> None:
    track = EncodedAudioTrack(lambda: b"\x01sealed")
    await track.recv()
    packet = await track.recv()
    payloads, timestamp = AiortcOpusEncoder().pack(packet)
    assert payloads == [b"\x01sealed"]
    assert timestamp == FRAME_TICKS


async def test_the_receiver_feeds_a_private_jitter_buffer_we_can_replace() -> None:
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)" in source
    assert source.count("__jitter_buffer") == 1, "aiortc uses its jitter buffer in new ways"
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio").receiver
        assert hasattr(receiver, JITTER_BUFFER)
        got: list[tuple[bytes, int]] = []
        tap = tap_receiver(receiver, lambda frame, ts: got.append((frame, ts)))
        assert getattr(receiver, JITTER_BUFFER) is tap
        packet = RtpPacket(payload_type=96, timestamp=1234, payload=b"sealed")
        assert tap.add(packet) == (False, None)
        assert got == [(b"sealed", 1234)]
    finally:
        await pc.close()


async def test_the_track_paces_20ms_frames_with_48khz_timestamps() -> None:
    frames = iter(range(256))
    track = EncodedAudioTrack(lambda: bytes([next(frames)]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    packets = [await track.recv() for _ in range(6)]
    assert loop.time() - start >= 5 * FRAME_S - 0.005
    assert [p.pts for p in packets] == [n * FRAME_TICKS for n in range(6)]
    assert all(p.time_base == TIME_BASE for p in packets)
    assert [bytes(p) for p in packets] == [bytes([n]) for n in range(6)]


async def test_a_track_whose_stream_closed_ends_instead_of_raising_into_aiortc() -> None:
    """At a call's end aiortc may ask once more after our encoder closed: the track ends
    (MediaStreamError, which aiortc takes as the end) instead of a CodecError traceback."""

    def closed() -> bytes:
        raise CodecError("OpusEncoder is closed")

    track = EncodedAudioTrack(closed)
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert track.readyState == "ended"
