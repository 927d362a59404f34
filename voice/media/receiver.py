"""The RTP receiver: authenticated packets into the jitter buffer, 20 ms playout into the sink.

The transport's receive loop (``voice.media.transport``) verifies each SRTP packet and calls
:meth:`RtpReceiver.on_rtp`, which checks the header (payload type 111, the SSRC the peer
announced) and pushes the Opus payload into the :class:`~voice.media.jitter.JitterBuffer` with
its arrival time. Nothing is buffered before playout starts (before the call is accepted nothing
may be heard).

Playout runs on its own steady 20 ms clock (absolute deadlines, skip ahead when late). Each tick
asks the jitter buffer what to do: play a packet, rebuild a lost frame from the FEC data in the
next packet, conceal a loss (Opus PLC), or wait (the buffer is still filling: play silence so the
sink keeps real time). The level of each decoded frame goes back to the buffer
(``note_silence``) so it can change its depth during pauses. :attr:`first_audio` is set when the
first frame decoded from a received packet is handed to the sink. :attr:`loss_noticed` is set
when a packet goes missing while our last report told the peer the link was clean: the RTCP
scheduler (``voice.media.rtcpsched``) then reports at once, so the peer's FEC is armed within a
round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from aiortc.rtp import RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpSrPacket, RtpPacket

from voice.audio.base import FRAME_BYTES, FRAME_SECONDS, AudioSink
from voice.errors import VoiceError
from voice.media.jitter import Conceal, JitterBuffer, Play, RecoverWithFec
from voice.media.opus import OpusDecoder
from voice.media.overuse import decoder_complexity
from voice.media.rtcp import ReceptionStats
from voice.media.sender import CLOCK_RATE, PAYLOAD_TYPE

if TYPE_CHECKING:
    from voice.media.clock import MediaClock

SILENCE = bytes(FRAME_BYTES)
PHASE_LEAD = 0.006  # s: first playout tick after the first packet: guard 2 ms + 4 ms of jitter
SILENCE_RMS = 100.0  # about -50 dBFS: below this a decoded frame counts as a pause


def frame_rms(pcm: bytes) -> float:
    """Root mean square of one s16le frame (an exact integer dot product: cheap per tick)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int64)
    return math.sqrt(int(samples @ samples) / samples.size) if samples.size else 0.0


@dataclass
class PlayoutCounters:
    """What the playout clock did, tick by tick."""

    played: int = 0  # decoded from a received packet
    fec_recovered: int = 0  # rebuilt from the FEC data of the next packet (if it had any:
    # libopus < 1.5 cannot tell, and then a packet without FEC data counts here too)
    concealed: int = 0  # Opus packet loss concealment
    waited: int = 0  # nothing to play yet: silence
    decode_errors: int = 0  # an authenticated payload Opus refused (concealed instead)
    ticks_skipped: int = 0


class RtpReceiver:
    """Receives one remote audio stream and plays it out."""

    def __init__(
        self,
        *,
        sink: AudioSink,
        decoder: OpusDecoder,
        jitter: JitterBuffer,
        remote_ssrc: int,
        on_report_block: Callable[[RtcpReceiverInfo], None],
        first_audio: asyncio.Event | None = None,
    ) -> None:
        self._sink = sink
        self._decoder = decoder
        self._jitter = jitter
        self.remote_ssrc = remote_ssrc
        self._on_report_block = on_report_block
        self.reception = ReceptionStats(remote_ssrc, CLOCK_RATE)
        self.playout = PlayoutCounters()
        self.playing = False
        self.rejected_rtp = 0  # authenticated but not our stream (SSRC / payload type)
        self.rtcp_parse_errors = 0
        self.first_audio = first_audio if first_audio is not None else asyncio.Event()
        self.first_audio_at: float | None = None
        self._first_arrival: float | None = None  # of the first packet pushed while playing
        # The newest packet that arrived before playout started (the peer may start sending a
        # few ms before the signaling message that tells us to play): (seq, ts, payload, at).
        self._early: tuple[int, int, bytes, float] | None = None
        self._aligned = False
        self._wakeup = asyncio.Event()
        self.loss_noticed = asyncio.Event()

    @property
    def jitter_buffer(self) -> JitterBuffer:
        return self._jitter

    def on_rtp(self, data: bytes, arrival: float) -> None:
        """One verified, decrypted RTP packet."""
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.rejected_rtp += 1
            return
        if packet.ssrc != self.remote_ssrc or packet.payload_type != PAYLOAD_TYPE:
            self.rejected_rtp += 1
            return
        self.reception.update(packet.sequence_number, packet.timestamp, arrival)
        if self.reception.loss_unreported:
            self.loss_noticed.set()
        if not packet.payload:
            return
        if not self.playing:
            self._early = (packet.sequence_number, packet.timestamp, packet.payload, arrival)
            return
        self._push(packet.sequence_number, packet.timestamp, packet.payload, arrival)

    def _push(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> None:
        self._jitter.push(seq=seq, timestamp=timestamp, payload=payload, arrival=arrival)
        if self._first_arrival is None:
            self._first_arrival = arrival
            self._wakeup.set()

    def on_rtcp(self, data: bytes, arrival: float) -> None:
        """One verified, decrypted (compound) RTCP packet from the peer."""
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            self.rtcp_parse_errors += 1
            return
        for packet in packets:
            if isinstance(packet, RtcpSrPacket | RtcpRrPacket):
                if packet.ssrc != self.remote_ssrc:
                    continue
                if isinstance(packet, RtcpSrPacket):
                    self.reception.note_sender_report(packet.sender_info.ntp_timestamp, arrival)
                for block in packet.reports:
                    self._on_report_block(block)

    def report_block(self, now: float) -> RtcpReceiverInfo | None:
        """The report block about the peer's stream, once anything was received."""
        if self.reception.received == 0:
            return None
        return self.reception.report_block(now)

    async def run(self, clock: MediaClock | None = None) -> None:
        """Play out until cancelled; with ``clock``, decoders follow its CPU governor."""
        loop = asyncio.get_running_loop()
        self.playing = True
        start = loop.time()
        early, self._early = self._early, None
        if early is not None and start - early[3] < FRAME_SECONDS:
            # Authenticated audio that beat the go-ahead by less than a frame: play it now
            # rather than wait 20 ms for the next packet. Anything older is stale.
            self._push(*early)
        tick = 0
        while True:
            if not self._aligned and self._first_arrival is not None:
                # Re-phase once: the tick that plays the first packet comes PHASE_LEAD after it
                # arrived instead of up to a frame later (saves 0-20 ms of mouth-to-ear).
                start = self._first_arrival + PHASE_LEAD - tick * FRAME_SECONDS
                self._aligned = True
            deadline = start + tick * FRAME_SECONDS
            delay = deadline - loop.time()
            if delay > 0:
                if self._aligned:
                    await asyncio.sleep(delay)
                    self._wakeup.clear()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), delay)
                    if self._first_arrival is not None:
                        continue
            elif -delay >= FRAME_SECONDS:
                behind = int(-delay / FRAME_SECONDS)
                tick += behind
                self.playout.ticks_skipped += behind
            if clock is not None:
                best = self._decoder.max_complexity
                self._decoder.set_complexity(decoder_complexity(clock.complexity, best))
            pcm, real, decoded = self._next_frame(loop.time())
            if decoded:
                self._jitter.note_silence(frame_rms(pcm) < SILENCE_RMS)
            await self._sink.write_frame(pcm)
            if real and self.first_audio_at is None:
                self.first_audio_at = loop.time()
                self.first_audio.set()
            tick += 1

    def _next_frame(self, now: float) -> tuple[bytes, bool, bool]:
        """Ask the jitter buffer what to play: (frame, from a packet?, from the decoder?)."""
        action = self._jitter.pop(now)
        try:
            if isinstance(action, Play):
                pcm = self._decoder.decode(action.payload)
                self.playout.played += 1
                return pcm, True, True
            if isinstance(action, RecoverWithFec):
                if self._decoder.has_fec(action.next_payload) is False:
                    self.playout.concealed += 1  # no FEC bits in it: libopus would conceal
                    return self._decoder.conceal(), False, True
                pcm = self._decoder.decode_fec(action.next_payload)
                self.playout.fec_recovered += 1
                return pcm, True, True
        except VoiceError:
            self.playout.decode_errors += 1
            action = Conceal()
        if isinstance(action, Conceal):
            self.playout.concealed += 1
            return self._decoder.conceal(), False, True
        self.playout.waited += 1
        return SILENCE, False, False
