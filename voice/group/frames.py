"""Encoded-frame hooks on aiortc: send our own (sealed) Opus frames, take received ones raw.

A group call seals each Opus frame end to end (SFrame) and Janus forwards it unread, so aiortc
must neither encode what we send nor decode what we receive. aiortc has no encoded-transform
API (WebRTC's "insertable streams"); two hooks stand in for it, and only this module knows:

- Sending is public API: ``RTCRtpSender`` asks its track for the next item and, when it is an
  ``av.Packet`` rather than a frame, calls the codec's ``pack()`` (the payload goes out as is,
  with ``pts`` converted to the RTP clock) instead of ``encode()``. :class:`EncodedAudioTrack`
  yields such packets, one per 20 ms, each holding whatever ``next_frame()`` returns.
- Receiving is not: :func:`tap_receiver` replaces a receiver's private jitter buffer
  (``RTCRtpReceiver.__jitter_buffer``, aiortc 1.16) with a :class:`FrameTap` that hands every
  RTP payload to a callback and returns no frame, so the decoder thread never sees one. What
  aiortc does before the buffer still runs: SRTP, codec lookup by payload type, the statistics
  behind RTCP receiver reports. Relied on (checked by tests/voice/group/test_frames.py): the
  attribute's mangled name, and ``add(packet) -> (pli_flag, encoded_frame | None)`` being the
  only call ``_handle_rtp_packet`` makes on it. The tap does not reorder or deduplicate:
  that is the SFrame layer's job (it must check every frame anyway).

DTLS-SRTP to Janus stays aiortc's own: that hop is hop by hop; SFrame is the end-to-end layer.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable
from typing import Final

import av
from aiortc import RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from av.stream import Stream

from voice.errors import CodecError

__all__ = [
    "FRAME_S",
    "FRAME_TICKS",
    "SAMPLE_RATE",
    "EncodedAudioTrack",
    "FrameTap",
    "OnFrame",
    "tap_receiver",
]

SAMPLE_RATE: Final = 48_000  # Opus's RTP clock (RFC 7587), whatever the audio's real rate
FRAME_S: Final = 0.020
FRAME_TICKS: Final = 960  # RTP timestamp step of one 20 ms frame
TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE)
JITTER_BUFFER: Final = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16's private name

OnFrame = Callable[[bytes, int], None]  # (payload as received, RTP timestamp)


class EncodedAudioTrack(MediaStreamTrack):
    """An audio track of ready-made frames: every 20 ms, ``next_frame()`` (e.g. SFrame(Opus)).

    Paced in real time from the first ``recv``; when the loop falls behind, frames go out back
    to back until it catches up, so the RTP clock never drifts from the wall clock."""

    kind = "audio"

    def __init__(self, next_frame: Callable[[], bytes]) -> None:
        super().__init__()
        self._next_frame = next_frame
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.Packet[Stream]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + self._count * FRAME_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            frame = self._next_frame()
        except CodecError:  # our stream closed while aiortc still asked (a call's end)
            self.stop()
            raise MediaStreamError from None
        packet = av.Packet(frame)
        packet.pts = self._count * FRAME_TICKS
        packet.time_base = TIME_BASE
        self._count += 1
        return packet


class FrameTap:
    """Stands in for a receiver's jitter buffer: each RTP payload goes to ``on_frame``."""

    def __init__(self, on_frame: OnFrame) -> None:
        self.on_frame = on_frame

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        """aiortc's call: no picture-loss request, and no frame for the decoder, ever."""
        self.on_frame(bytes(packet.payload), int(packet.timestamp))
        return False, None


def tap_receiver(receiver: RTCRtpReceiver, on_frame: OnFrame) -> FrameTap:
    """Route ``receiver``'s payloads to ``on_frame`` instead of its decoder (before packets
    arrive, e.g. right after ``setRemoteDescription``). Raises RuntimeError if this aiortc
    lacks the private buffer: the hook would silently do nothing."""
    if not hasattr(receiver, JITTER_BUFFER):
        raise RuntimeError(f"aiortc changed: RTCRtpReceiver has no {JITTER_BUFFER}")
    tap = FrameTap(on_frame)
    setattr(receiver, JITTER_BUFFER, tap)
    return tap
