"""The RTP sender: one Opus frame every 20 ms, on a clock that never drifts and never bursts.

Each tick reads a frame from the :class:`~voice.audio.base.AudioSource` (at end of stream it
sends silence, so the constant-bitrate stream and its timing stay the same until hang-up),
encodes it with Opus (CBR, in-band FEC), wraps it in RTP (payload type 111, random SSRC, random
initial sequence number and timestamp, marker on the first packet) and hands the plaintext packet
to ``send_rtp`` (the media transport protects it with SRTP and puts it on the ICE path).

Timing: the ticks are those of the process's shared :class:`~voice.media.clock.MediaClock`, tick
*n* due at ``origin + n * 20 ms`` (absolute deadlines from ``loop.time()``, so sleep overshoot
never accumulates). If the loop falls more than a frame behind, the missed ticks are skipped (the
RTP timestamp still advances with real time) instead of sending a burst.

The peer's RTCP receiver reports feed :meth:`RtpSender.on_report_block`, which sets the encoder's
expected packet loss (how many bits Opus spends on FEC) from the reported ``fraction_lost`` and
measures the round-trip time from the report's LSR/DLSR.
With ``fec_on_demand`` (what :class:`~voice.media.session.MediaSession` uses) in-band FEC stays
enabled but costs no bits while the peer reports a clean link: expected loss 0 until a report
shows loss, and again after ``CLEAN_REPORTS_TO_DISARM`` clean reports in a row. At 32 kbit/s CBR
the FEC share is expensive (PESQ-WB of clean speech 4.27 without it, 3.3 at 5 % expected loss;
docs/media.md), and a clean link is the common case.

With a :class:`~voice.media.ladder.BitrateLadder` (the session's default) the same reports also
pick the constant bitrate (40, 48 or 64 kbit/s; docs/media.md, "Bitrate ladder"), and FEC
costs bits exactly while the ladder is above its clean bottom step. Nothing else changes a packet's
size or time: the source's content never reaches any of these decisions.

Mute (:attr:`RtpSender.muted`, also used for hold) replaces the source's frames with digital
silence before encoding; the source is still read every tick, and the packets keep their size
and time, so the network cannot tell a muted call from a talking one
(tests/voice/media/test_mute_adversarial.py).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiortc.rtp import RtcpReceiverInfo, RtcpSenderInfo, RtcpSrPacket

from voice.audio.base import FRAME_BYTES, FRAME_SAMPLES, AudioSource
from voice.media.ladder import BitrateLadder
from voice.media.opus import OpusEncoder
from voice.media.rtcp import ntp_time, round_trip_seconds

if TYPE_CHECKING:
    from voice.media.clock import MediaClock

PAYLOAD_TYPE = 111
CLOCK_RATE = 48_000
# Expected loss told to libopus once the peer reports loss. At 32 kbps CBR every FEC bit comes
# out of the primary encoding, so more redundancy stops paying early: offline, PESQ-WB at 5 % /
# 10 % real loss peaked with 3-5 % expected (3.1 / 2.7) and fell to 2.8 / 2.5 at 10 % expected
# and 2.4 / 2.2 at 20 % (docs/media.md, "FEC policy").
MIN_LOSS_PERC = 3
MAX_LOSS_PERC = 5
CLEAN_REPORTS_TO_DISARM = 15  # ~15 s of RTCP reports without loss before FEC stops costing bits
SILENCE = bytes(FRAME_BYTES)
_RTP_HEADER = struct.Struct("!BBHII")  # V=2, no padding/extension/CSRC (RFC 3550 section 5.1)


def rtp_packet(*, marker: bool, seq: int, timestamp: int, ssrc: int, payload: bytes) -> bytes:
    """A serialised RTP packet with our fixed 12-byte header (same bytes as aiortc's RtpPacket)."""
    header = _RTP_HEADER.pack(0x80, (0x80 if marker else 0) | PAYLOAD_TYPE, seq, timestamp, ssrc)
    return header + payload


def loss_perc_target(fraction_lost: int, previous: float) -> float:
    """Smoothed expected-loss percentage from one report's ``fraction_lost`` (0..255).

    Reports come about once a second and are noisy; an even blend with the previous value follows
    a real change within a few seconds. The result is clamped to MIN..MAX_LOSS_PERC (3..5 %): at
    32 kbps a larger share of FEC starves the primary encoding for less than it recovers.
    """
    reported = 100.0 * fraction_lost / 256.0
    blended = 0.5 * previous + 0.5 * reported
    return min(float(MAX_LOSS_PERC), max(float(MIN_LOSS_PERC), blended))


class RtpSender:
    """Paces, encodes and packetises one outgoing audio stream."""

    def __init__(
        self,
        *,
        source: AudioSource,
        encoder: OpusEncoder,
        send_rtp: Callable[[bytes], Awaitable[None]],
        ssrc: int,
        initial_seq: int,
        initial_timestamp: int,
        initial_loss_perc: int,
        wallclock: Callable[[], float] = time.time,
        fec_on_demand: bool = False,
        ladder: BitrateLadder | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._encoder = encoder
        self._send_rtp = send_rtp
        self._wallclock = wallclock
        self.ssrc = ssrc
        self._seq = initial_seq & 0xFFFF
        self._timestamp = initial_timestamp & 0xFFFF_FFFF
        self._last_sent_at: float | None = None  # loop time of the last packet's deadline
        self._last_timestamp = self._timestamp
        self.packets_sent = 0
        self.octets_sent = 0  # RTP payload octets, as RTCP SR counts them
        self.ticks_skipped = 0
        self.source_ended = False
        self.muted = False  # send digital silence in place of the source (mute, hold)
        self.payload_sizes: set[int] = set()
        self._loss_perc = float(initial_loss_perc)  # the prior for the first lossy report
        self.loss_perc = initial_loss_perc
        self.remote_fraction_lost: int | None = None
        self.rtt_seconds: float | None = None  # from the newest report that echoed one of our SRs
        self._on_demand = fec_on_demand
        self._clean_reports = CLEAN_REPORTS_TO_DISARM  # "clean so far" until a report says not
        self._ladder = ladder
        self._monotonic = monotonic  # the ladder's hold times
        if ladder is not None:
            encoder.set_bitrate(ladder.bitrate)
        if fec_on_demand:
            self.loss_perc = 0
            encoder.set_packet_loss_perc(0)

    @property
    def bitrate(self) -> int:
        """The constant bitrate the encoder sends at now (bit/s)."""
        return self._encoder.bitrate

    @property
    def last_sent_at(self) -> float | None:
        """Loop time of the newest packet's tick deadline (when it was due to leave)."""
        return self._last_sent_at

    @property
    def max_bitrate(self) -> int:
        """The highest bitrate this sender may use (what ``maxaveragebitrate`` announces)."""
        return self._encoder.bitrate if self._ladder is None else self._ladder.steps[-1].bitrate

    async def run_clocked(self, clock: MediaClock) -> None:
        """Send until cancelled, on the process's shared tick grid (``voice.media.clock``).

        Encoding goes to the clock's codec worker with the other senders' frames of the tick. A
        tick missed (the loop or a slow source was late) is skipped, not sent late in a burst:
        the RTP timestamp still advances by its 960 samples and ``ticks_skipped`` counts it.
        """
        first = clock.join()
        try:
            last: int | None = None
            while True:
                if last is None:
                    index, deadline = first
                else:
                    index, deadline = await clock.tick(last)
                if last is not None and index > last + 1:
                    behind = index - last - 1
                    self._timestamp = (self._timestamp + behind * FRAME_SAMPLES) & 0xFFFF_FFFF
                    self.ticks_skipped += behind
                last = index
                pcm = await self._read()
                payload = await clock.encode(self._encoder, pcm)
                await self._send_payload(payload, deadline)
        finally:
            clock.leave()

    async def _read(self) -> bytes:
        """The next frame to encode: the source's, or digital silence while :attr:`muted`.

        A muted source is still read, so a microphone's buffer does not back up (and its
        audio from before the unmute is not sent late)."""
        pcm = await self._read_source()
        return SILENCE if self.muted else pcm

    async def _read_source(self) -> bytes:
        if self.source_ended:
            return SILENCE
        pcm = await self._source.read_frame()
        if pcm is None:
            self.source_ended = True
            return SILENCE
        if len(pcm) != FRAME_BYTES:  # a short last frame: pad; never send a wrong-sized frame
            pcm = (pcm + SILENCE)[:FRAME_BYTES]
        return pcm

    async def _send_payload(self, payload: bytes, deadline: float) -> None:
        packet = rtp_packet(
            marker=self.packets_sent == 0,
            seq=self._seq,
            timestamp=self._timestamp,
            ssrc=self.ssrc,
            payload=payload,
        )
        self._last_sent_at = deadline
        self._last_timestamp = self._timestamp
        self._seq = (self._seq + 1) & 0xFFFF
        self._timestamp = (self._timestamp + FRAME_SAMPLES) & 0xFFFF_FFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        self.payload_sizes.add(len(payload))
        await self._send_rtp(packet)

    def sender_report(self, now: float, reports: list[RtcpReceiverInfo]) -> RtcpSrPacket | None:
        """An SR for the RTCP tick (``now`` is loop time), or None before the first packet."""
        if self._last_sent_at is None:
            return None
        elapsed = max(0.0, now - self._last_sent_at)
        rtp_now = (self._last_timestamp + int(elapsed * CLOCK_RATE)) & 0xFFFF_FFFF
        info = RtcpSenderInfo(
            ntp_timestamp=ntp_time(self._wallclock()),
            rtp_timestamp=rtp_now,
            packet_count=self.packets_sent & 0xFFFF_FFFF,
            octet_count=self.octets_sent & 0xFFFF_FFFF,
        )
        return RtcpSrPacket(ssrc=self.ssrc, sender_info=info, reports=reports)

    def on_report_block(self, block: RtcpReceiverInfo) -> None:
        """Adapt the encoder's expected loss to what the peer reports receiving from us.

        Blocks about another SSRC are ignored. With a ladder the report also sets the bitrate,
        and FEC is disarmed exactly while the ladder is on its bottom (clean) step. The
        round-trip time is measured after the encoder was retuned.
        """
        if block.ssrc != self.ssrc:
            return
        self.remote_fraction_lost = block.fraction_lost
        self._loss_perc = loss_perc_target(block.fraction_lost, self._loss_perc)
        self._clean_reports = 0 if block.fraction_lost else self._clean_reports + 1
        if self._ladder is not None:
            self._encoder.set_bitrate(
                self._ladder.on_report(block.fraction_lost, self._monotonic())
            )
            clean = self._ladder.step == 0
        else:
            clean = self._clean_reports >= CLEAN_REPORTS_TO_DISARM
        perc = math.ceil(self._loss_perc)
        if self._on_demand and clean:
            perc = 0
        if perc != self.loss_perc:
            self.loss_perc = perc
            self._encoder.set_packet_loss_perc(perc)
        rtt = round_trip_seconds(block, self._wallclock())
        if rtt is not None:
            self.rtt_seconds = rtt
