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

Concealment is bounded. A run of missing frames (the peer stopped, the network is down) is
concealed at full level for ``CONCEAL_FULL_FRAMES`` (80 ms: bursts of 1-3 losses, what random
loss produces, sound exactly as before), then the concealment fades linearly to zero over
``FADE_FRAMES`` (80 ms), then the sink gets comfort noise until packets return (no more PLC:
Opus's deep PLC would babble for seconds): random noise at the level of the peer's pauses, as
phones do so that a line does not sound dead, at most ``COMFORT_MAX_RMS`` (about -55 dBFS), and
true silence if the peer's pauses were silent or none was heard yet. The first frame decoded
after a fade is faded in over ``FADE_IN_SAMPLES`` (10 ms) from the level the fade had reached,
so the resumption does not click; the jitter buffer re-syncs after the gap as after any other.

:attr:`first_packet` is set (and :attr:`first_packet_at`) by the first RTP packet of the peer's
stream that passed SRTP authentication (``on_rtp`` sees nothing else); :attr:`last_rtp_at` is the
arrival of the newest one. In the peer's RTCP, an authenticated BYE (RFC 3550 section 6.6) that
names the peer's SSRC sets :attr:`peer_said_bye`: the peer hung up, said in band.

While :attr:`RtpReceiver.muted` (the call is on hold) everything above still runs (packets are
counted, buffered and decoded, so nothing is stale when it ends) but the sink gets silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtcpSrPacket, RtpPacket

from voice.audio.base import FRAME_BYTES, FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, AudioSink
from voice.audio.stretch import accelerate, expand
from voice.errors import VoiceError
from voice.media.jitter import Conceal, JitterBuffer, Play, RecoverWithFec, Tempo
from voice.media.opus import OpusDecoder
from voice.media.overuse import decoder_complexity
from voice.media.rtcp import (
    RTCP_BYE,
    RTCP_RR,
    RTCP_SR,
    MalformedRtcp,
    ReceptionStats,
    parse_bye,
    split_compound,
)
from voice.media.sender import CLOCK_RATE, PAYLOAD_TYPE

if TYPE_CHECKING:
    from voice.media.clock import MediaClock

SILENCE = bytes(FRAME_BYTES)
GUARD_MS = 12.0  # the jitter buffer's reserve for a late packet beyond the measured jitter
PHASE_LEAD = 0.024  # s: first playout tick after the first packet: the guard + 12 ms
SILENCE_RMS = 100.0  # about -50 dBFS: below this a decoded frame counts as a pause
CONCEAL_FULL_FRAMES = 4  # missing frames concealed at full level (80 ms: bursts of 1-3 losses)
FADE_FRAMES = 4  # then the concealment fades to zero over 80 ms; comfort noise from then on
FADE_IN_SAMPLES = 480  # 10 ms ramp back to full level for the first frame after a fade
STRETCH_REST_FRAMES = 2  # after a frame too aperiodic to stretch, skip this many (CPU under load)
COMFORT_MAX_RMS = 60.0  # comfort noise never louder than this (about -55 dBFS)
_NOISE_FLOOR_RISE = 1.01  # the background estimate may rise 1 % per quiet frame (2x in 1.4 s)
_NOISE_FLOOR_STEP = 0.1  # ... plus this much, so a near-zero estimate can rise at all
_NOISE_FLOOR_MIN = 1.0  # quieter frames (decoded digital silence, a muted mic) are not a level


def ramp(pcm: bytes, start: float, end: float, length: int) -> bytes:
    """``pcm`` scaled by a gain going linearly from ``start`` to ``end`` over its first
    ``length`` samples (reaching ``end`` on the last of them) and ``end`` after that."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    length = max(1, min(length, samples.size))
    gains = np.full(samples.size, end, dtype=np.float32)
    steps = np.arange(1, length + 1, dtype=np.float32) / length
    gains[:length] = start + (end - start) * steps
    scaled = np.clip(np.rint(samples * gains), -32768, 32767).astype("<i2")
    return bytes(scaled.tobytes())


def frame_rms(pcm: bytes) -> float:
    """Root mean square of one s16le frame (a float32 dot product: cheap per tick; its 7
    significant digits are plenty for a level)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    return math.sqrt(float(samples.dot(samples)) / samples.size) if samples.size else 0.0


@dataclass
class PlayoutCounters:
    """What the playout clock did, tick by tick."""

    played: int = 0  # decoded from a received packet
    fec_recovered: int = 0  # rebuilt from the FEC data of the next packet (if it had any:
    # libopus < 1.5 cannot tell, and then a packet without FEC data counts here too)
    concealed: int = 0  # Opus packet loss concealment (at full level or fading)
    faded: int = 0  # ... of which attenuated: a run of missing frames longer than 80 ms
    silenced: int = 0  # still missing after the fade: comfort noise (or silence), not PLC
    withheld: int = 0  # decoded but not played: playout muted (the call is on hold)
    waited: int = 0  # nothing to play yet: silence
    decode_errors: int = 0  # an authenticated payload Opus refused (concealed instead)
    ticks_skipped: int = 0
    accelerated: int = 0  # frames shortened by a pitch period (the buffer asked: Tempo.FASTER)
    expanded: int = 0  # frames lengthened by a pitch period (Tempo.SLOWER)
    stretch_declined: int = 0  # asked, but the frame was not periodic enough: played as is
    stretched_ms: float = 0.0  # net time added (+) or removed (-) by stretching


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
        first_packet: asyncio.Event | None = None,
        peer_said_bye: asyncio.Event | None = None,
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
        self.rtcp_parse_errors = 0  # authenticated RTCP whose framing or a report was bad
        self.rtcp_bye_malformed = 0  # an authenticated BYE that broke RFC 3550 6.6: ignored
        self.first_packet = first_packet if first_packet is not None else asyncio.Event()
        self.first_packet_at: float | None = None  # arrival of the peer's first RTP packet
        self.last_rtp_at: float | None = None  # ... and of its newest (loop time)
        self.peer_said_bye = peer_said_bye if peer_said_bye is not None else asyncio.Event()
        self._missing = 0  # consecutive ticks without a frame from a packet
        self._gain = 1.0  # playout gain at the end of the last frame (below 1 after a fade)
        self.first_audio = first_audio if first_audio is not None else asyncio.Event()
        self.first_audio_at: float | None = None
        self._first_arrival: float | None = None  # of the first packet pushed while playing
        # The newest packet that arrived before playout started (the peer may start sending a
        # few ms before the signaling message that tells us to play): (seq, ts, payload, at).
        self._early: tuple[int, int, bytes, float] | None = None
        self._aligned = False
        self._wakeup = asyncio.Event()
        self.loss_noticed = asyncio.Event()
        # Decoded samples not yet handed to the sink: what a stretched frame left over.
        self._pending = np.zeros(0, dtype=np.int16)
        self._pending_real = False  # ... decoded from a packet?
        self._stretch_rest = 0  # frames to play as they are after a declined stretch
        self._background: float | None = None  # RMS of the peer's pauses (None: none heard)
        self._noise = np.random.default_rng()
        self.muted = False  # play silence in place of the peer's audio (hold); still decode
        self._unmuting = False

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
        self.last_rtp_at = arrival
        if self.first_packet_at is None:
            self.first_packet_at = arrival
            self.first_packet.set()
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
        """One verified, decrypted (compound) RTCP packet from the peer.

        A compound whose framing is broken is dropped whole (``rtcp_parse_errors``); inside a
        well-framed one, a bad report is skipped the same way and a malformed BYE is counted
        (``rtcp_bye_malformed``) and ignored, the other packets still count.
        """
        try:
            parts = split_compound(data)
        except MalformedRtcp:
            self.rtcp_parse_errors += 1
            return
        for packet_type, count, payload in parts:
            if packet_type == RTCP_BYE:
                try:
                    sources, _reason = parse_bye(count, payload)
                except MalformedRtcp:
                    self.rtcp_bye_malformed += 1
                    continue
                if self.remote_ssrc in sources:
                    self.peer_said_bye.set()
                continue
            if packet_type not in (RTCP_SR, RTCP_RR):
                continue
            try:
                report = (
                    RtcpSrPacket.parse(payload, count)
                    if packet_type == RTCP_SR
                    else RtcpRrPacket.parse(payload, count)
                )
            except ValueError:
                self.rtcp_parse_errors += 1
                continue
            if report.ssrc != self.remote_ssrc:
                continue
            if isinstance(report, RtcpSrPacket):
                self.reception.note_sender_report(report.sender_info.ntp_timestamp, arrival)
            for block in report.reports:
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
            pcm, real = self._gate(*self.tick(loop.time()))
            await self._sink.write_frame(pcm)
            if real and self.first_audio_at is None:
                self.first_audio_at = loop.time()
                self.first_audio.set()
            tick += 1

    def _gate(self, pcm: bytes, real: bool) -> tuple[bytes, bool]:
        """What the sink gets of a tick's frame: silence while :attr:`muted`, and a fade-in
        on the first frame after it (so a resumed call does not click)."""
        if self.muted:
            self.playout.withheld += 1
            self._unmuting = True
            return SILENCE, False
        if self._unmuting:
            self._unmuting = False
            pcm = ramp(pcm, 0.0, 1.0, FADE_IN_SAMPLES)
        return pcm, real

    def tick(self, now: float) -> tuple[bytes, bool]:
        """One playout tick at loop time ``now``: the frame for the sink, and whether it holds
        audio decoded from a received packet (``run`` calls this every 20 ms).

        Usually one decoded frame is one tick. A frame the jitter buffer had shortened leaves
        less than a frame: the next one is decoded in the same tick and its remainder waits
        for the next tick (a lengthened frame leaves a remainder too).
        """
        real = self._pending_real and self._pending.size > 0
        chunks = [self._pending]
        have = self._pending.size
        while have < FRAME_SAMPLES:
            pending_ms = have * 1000.0 / SAMPLE_RATE
            pcm, from_packet, decoded, tempo = self._next_frame(now, pending_ms)
            if decoded:
                level = frame_rms(pcm)
                self._jitter.note_silence(level < SILENCE_RMS)
                if from_packet and _NOISE_FLOOR_MIN <= level < SILENCE_RMS and self._gain >= 1:
                    self._track_background(level)
            if have == 0 and tempo is Tempo.NORMAL:  # the common case: one frame, as decoded
                self._pending_real = from_packet
                return pcm, from_packet
            samples = self._stretch(np.frombuffer(pcm, dtype="<i2"), tempo, have)
            chunks.append(samples)
            have += samples.size
            real = real or from_packet
            self._pending_real = from_packet
        joined = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        self._pending = joined[FRAME_SAMPLES:]
        return bytes(joined[:FRAME_SAMPLES].astype("<i2").tobytes()), real

    def _stretch(
        self, samples: npt.NDArray[np.int16], tempo: Tempo, pending: int
    ) -> npt.NDArray[np.int16]:
        """A decoded frame, shortened or lengthened by a pitch period if the buffer asked
        (``TRIM``: by no more than the ``pending`` samples, so no extra frame is decoded)."""
        if tempo is Tempo.NORMAL:
            return samples
        if self._stretch_rest > 0:  # the last attempt found no period: let speech move on
            self._stretch_rest -= 1
            return samples
        if tempo is Tempo.SLOWER:
            done = expand(samples)
        else:
            done = accelerate(samples, longest=pending if tempo is Tempo.TRIM else None)
        if done.period == 0:
            self.playout.stretch_declined += 1
            self._stretch_rest = STRETCH_REST_FRAMES
            return samples
        if tempo is not Tempo.SLOWER:
            self.playout.accelerated += 1
            self.playout.stretched_ms -= done.period * 1000.0 / SAMPLE_RATE
        else:
            self.playout.expanded += 1
            self.playout.stretched_ms += done.period * 1000.0 / SAMPLE_RATE
        return done.samples

    def _next_frame(self, now: float, pending_ms: float) -> tuple[bytes, bool, bool, Tempo]:
        """Ask the jitter buffer what to play: (frame, from a packet?, from the decoder?, how
        to stretch it)."""
        action = self._jitter.pop(now, pending_ms)
        normal = Tempo.NORMAL
        try:
            if isinstance(action, Play):
                pcm = self._decoder.decode(action.payload)
                self.playout.played += 1
                return self._heard(pcm), True, True, action.tempo
            if isinstance(action, RecoverWithFec):
                if self._decoder.has_fec(action.next_payload) is False:
                    return self._conceal(), False, True, normal  # no FEC bits: it would conceal
                pcm = self._decoder.decode_fec(action.next_payload)
                self.playout.fec_recovered += 1
                return self._heard(pcm), True, True, normal
        except VoiceError:
            self.playout.decode_errors += 1
            action = Conceal()
        if isinstance(action, Conceal):
            return self._conceal(), False, True, normal
        self.playout.waited += 1
        return SILENCE, False, False, normal

    def _track_background(self, level: float) -> None:
        """Follow the level of the peer's pauses (a minimum that may rise slowly)."""
        if self._background is None or level < self._background:
            self._background = level
        else:
            risen = self._background * _NOISE_FLOOR_RISE + _NOISE_FLOOR_STEP
            self._background = min(level, risen)

    def _comfort_noise(self) -> bytes:
        """What the sink gets once concealment has faded: noise at the level of the peer's
        pauses (capped), so the line does not sound dead; true silence if the peer's pauses
        were silent or none was heard. Random: only its level follows the peer's audio, and it
        is played here, never sent."""
        level = min(self._background or 0.0, COMFORT_MAX_RMS)
        if level < 1.0:
            return SILENCE
        white = self._noise.standard_normal(FRAME_SAMPLES + 5)
        shaped = np.convolve(white, np.ones(6) / 6, mode="valid")  # null at 8 kHz: wideband
        shaped *= level / max(float(np.sqrt(np.mean(shaped * shaped))), 1e-9)
        return bytes(np.clip(np.rint(shaped), -32768, 32767).astype("<i2").tobytes())

    def _heard(self, pcm: bytes) -> bytes:
        """A frame decoded from a packet: ends a run of missing frames, fading in after a fade."""
        self._missing = 0
        if self._gain >= 1.0:
            return pcm
        pcm = ramp(pcm, self._gain, 1.0, FADE_IN_SAMPLES)
        self._gain = 1.0
        return pcm

    def _conceal(self) -> bytes:
        """A missing frame: Opus PLC at full level, then fading, then silence (see above)."""
        self._missing += 1
        fading = self._missing - CONCEAL_FULL_FRAMES  # 1..FADE_FRAMES while fading
        if fading > FADE_FRAMES:
            self.playout.silenced += 1
            self._gain = 0.0
            return self._comfort_noise()  # no PLC: nothing to hear, nothing to spend on it
        self.playout.concealed += 1
        pcm = self._decoder.conceal()
        if fading <= 0:
            return pcm
        self.playout.faded += 1
        end = max(0.0, 1.0 - fading / FADE_FRAMES)
        pcm = ramp(pcm, self._gain, end, len(pcm) // 2)
        self._gain = end
        return pcm
