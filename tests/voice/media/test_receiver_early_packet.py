"""Audio that beats the go-ahead: the peer may start sending a few ms before the signaling
message that tells us to play arrives. The newest such packet is played at once if it is less
than a frame old, so answer-to-first-audio does not wait for the next packet; older ones are
stale and dropped."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
from aiortc.rtp import RtpPacket

from voice.audio.base import FRAME_SAMPLES
from voice.audio.sinks import MemorySink
from voice.media.jitter import JitterBuffer
from voice.media.opus import OpusDecoder, OpusEncoder
from voice.media.receiver import RtpReceiver
from voice.media.sender import PAYLOAD_TYPE

SSRC = 0x1234


def _tone_packet(seq: int) -> bytes:
    t = (np.arange(FRAME_SAMPLES) + seq * FRAME_SAMPLES) / 48_000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    with OpusEncoder() as encoder:
        payload = encoder.encode(pcm)
    packet = RtpPacket(
        payload_type=PAYLOAD_TYPE,
        sequence_number=seq,
        timestamp=seq * FRAME_SAMPLES,
        ssrc=SSRC,
        payload=payload,
    )
    return packet.serialize()


async def _played_after(early_age: float) -> tuple[RtpReceiver, MemorySink]:
    loop = asyncio.get_running_loop()
    sink = MemorySink()
    receiver = RtpReceiver(
        sink=sink,
        decoder=OpusDecoder(),
        jitter=JitterBuffer(),
        remote_ssrc=SSRC,
        on_report_block=lambda _block: None,
    )
    receiver.on_rtp(_tone_packet(7), loop.time() - early_age)  # before playout starts
    task = asyncio.create_task(receiver.run())
    try:
        await asyncio.sleep(0.1)  # five ticks; no further packet comes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return receiver, sink


async def test_a_packet_that_beat_the_go_ahead_is_played_at_once() -> None:
    receiver, _sink = await _played_after(early_age=0.004)
    assert receiver.playout.played == 1
    assert receiver.first_audio.is_set()


async def test_a_stale_packet_from_before_the_go_ahead_is_not_played() -> None:
    receiver, _sink = await _played_after(early_age=0.5)
    assert receiver.playout.played == 0
    assert not receiver.first_audio.is_set()
    assert receiver.reception.received == 1  # it was counted, just not played
