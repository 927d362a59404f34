"""Adversarial: muting (and hold, which mutes) shows nothing on the wire.

Two real senders (real Opus at the ladder's CBR steps, real SRTP) run side by side on one real
media clock with the same tone. One is muted for a stretch in the middle, toggled between two
ticks as a user would; both get the same RTCP loss reports, so the ladder moves during the
mute too. An eavesdropper sees the SRTP sizes, the send times and the RTP timestamps: both
streams must match in all three, tick for tick (every packet on the 20 ms grid, its timestamp
saying the same tick as its send time, the same size in both streams). The peer, holding the
key, must hear digital silence where the stream was muted and the tone everywhere else. The
muted source is still read once per tick (a microphone must not back up while muted).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

import numpy as np
from aiortc.rtp import RtcpReceiverInfo, RtpPacket

from voice.audio.sources import ToneSource
from voice.media.clock import INLINE, MediaClock
from voice.media.ladder import BitrateLadder
from voice.media.opus import OpusDecoder, OpusEncoder, OpusSettings
from voice.media.sender import RtpSender
from voice.media.srtp import TAG_LENGTH, SrtpContext

SSRC = 0x3A7E
PACKETS = 200  # 4 s at 20 ms
MUTE_FROM, MUTE_TO = 60, 140  # packets 61..140 (1-based) are sent muted
SETTLE = 3  # frames the decoder needs to ring out or ramp up after a switch
REPORTS = {30: 13, 90: 26, 120: 0, 170: 0}  # after packet n: fraction_lost (ladder up, down)
TONE_HZ = 440.0
TS0 = 99_000  # the first RTP timestamp


class CountingTone(ToneSource):
    """A tone that counts how often it was read."""

    def __init__(self) -> None:
        super().__init__(TONE_HZ, amplitude=12_000.0)
        self.reads = 0

    async def read_frame(self) -> bytes | None:
        self.reads += 1
        return await super().read_frame()


@dataclass
class Wire:
    """What left one sender, by tick index (from the RTP timestamp): the SRTP datagram and its
    send time (the tick's deadline). A tick the loop skipped under load has no packet; the
    comparisons below leave out the packet after such a gap in either stream (a report or a
    mute may have landed one packet later there), so a busy machine cannot fail the test."""

    sent: dict[int, tuple[bytes, float]] = field(default_factory=dict)

    def send_times(self) -> dict[int, float]:
        """Each packet's send time from the stream's first one."""
        t0 = self.sent[min(self.sent)][1]
        return {i: round(t - t0, 6) for i, (_, t) in self.sent.items()}


async def run_stream(source: CountingTone, clock: MediaClock, key: bytes, *, mute: bool) -> Wire:
    wire = Wire()
    srtp = SrtpContext(key, os.urandom(44))
    reports = sorted(REPORTS)
    done = asyncio.Event()

    async def send_rtp(packet: bytes) -> None:
        deadline = sender.last_sent_at
        assert deadline is not None
        index = ((RtpPacket.parse(packet).timestamp - TS0) & 0xFFFF_FFFF) // 960
        wire.sent[index] = (srtp.protect(packet), deadline)
        n = index + 1  # ticks so far: the report or key press comes between two ticks
        while reports and reports[0] <= n:
            lost = REPORTS[reports.pop(0)]
            sender.on_report_block(RtcpReceiverInfo(SSRC, lost, 0, 0, 0, 0, 0))
        if mute:
            sender.muted = MUTE_FROM <= n < MUTE_TO
        if n >= PACKETS:
            done.set()

    sender = RtpSender(
        source=source,
        encoder=OpusEncoder(OpusSettings()),
        send_rtp=send_rtp,
        ssrc=SSRC,
        initial_seq=7,
        initial_timestamp=TS0,
        initial_loss_perc=0,
        fec_on_demand=True,
        ladder=BitrateLadder(hold_s=1.0),
        monotonic=lambda: 0.02 * (max(wire.sent, default=-1) + 1),  # media time, per tick
    )
    task = asyncio.create_task(sender.run_clocked(clock))
    await done.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    srtp.close()
    for index in [i for i in wire.sent if i >= PACKETS]:
        del wire.sent[index]
    return wire


def heard(wire: Wire, key: bytes) -> dict[int, np.ndarray]:
    """What the peer decodes, by tick index (it has the key)."""
    peer = SrtpContext(os.urandom(44), key)
    decoder = OpusDecoder()
    frames = {}
    for index in sorted(wire.sent):
        plain = peer.unprotect(wire.sent[index][0])
        assert plain is not None
        pcm = decoder.decode(RtpPacket.parse(plain).payload)
        frames[index] = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    decoder.close()
    peer.close()
    return frames


def span(frames: dict[int, np.ndarray], start: int, stop: int) -> list[np.ndarray]:
    return [frames[i] for i in range(start, stop) if i in frames]


def rms(frames: list[np.ndarray]) -> float:
    samples = np.concatenate(frames)
    return float(np.sqrt(np.mean(samples * samples)))


def dominant_hz(frames: list[np.ndarray]) -> float:
    samples = np.concatenate(frames)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * 48_000 / samples.size)


async def test_a_muted_stream_looks_like_a_talking_one_and_decodes_to_silence() -> None:
    clock = MediaClock(asyncio.get_running_loop(), executor=INLINE)
    talking_src, muted_src = CountingTone(), CountingTone()
    talking_key, muted_key = os.urandom(44), os.urandom(44)
    talking, muted = await asyncio.gather(
        run_stream(talking_src, clock, talking_key, mute=False),
        run_stream(muted_src, clock, muted_key, mute=True),
    )
    # The eavesdropper: the same sizes, packet for packet, on the same 20 ms grid.
    both = [
        i
        for i in range(PACKETS)
        if all(i in w.sent and (i == 0 or i - 1 in w.sent) for w in (talking, muted))
    ]
    assert len(both) >= 0.9 * PACKETS  # (all of them unless the machine is very busy)
    sizes = [len(talking.sent[i][0]) for i in both]
    assert sizes == [len(muted.sent[i][0]) for i in both]
    for wire in (talking, muted):
        assert wire.send_times() == {i: round(0.02 * i, 6) for i in wire.sent}
    assert len(set(sizes)) > 1  # the ladder moved (also while muted) ...
    assert min(sizes) == 12 + 100 + TAG_LENGTH  # ... and every packet is full CBR (40k and up)
    # The source was read on every tick, muted or not.
    for src, wire in ((muted_src, muted), (talking_src, talking)):
        assert len(wire.sent) <= src.reads <= len(wire.sent) + 1
    # The peer: the tone, then digital silence while muted, then the tone again.
    frames = heard(muted, muted_key)
    during = span(frames, MUTE_FROM + SETTLE, MUTE_TO)
    for tone in (span(frames, SETTLE, MUTE_FROM), span(frames, MUTE_TO + SETTLE, PACKETS)):
        assert abs(dominant_hz(tone) - TONE_HZ) < 5
        assert rms(tone) > 5_000  # a 12 000-peak sine: RMS about 8 500
    assert rms(during) < 5 and max(float(np.abs(f).max()) for f in during) < 50
    unmuted = heard(talking, talking_key)
    assert rms(span(unmuted, MUTE_FROM + SETTLE, MUTE_TO)) > 5_000
