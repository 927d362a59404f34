"""Time-stretching in the receive path: a late packet or a clock drift does not shift the rest of
the call, and the buffer shrinks and grows during speech, not only in pauses.

A real Opus stream of continuous voiced sound (a 150 Hz pitch with harmonics: never a pause) goes
through a real RtpReceiver and JitterBuffer, ticked on a simulated 20 ms playout clock; packet
arrival times are chosen per test. The same stream without time-stretching is the control.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from aiortc.rtp import RtpPacket

from voice.audio.base import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from voice.media.jitter import JitterBuffer
from voice.media.opus import OpusDecoder, OpusEncoder
from voice.media.receiver import PHASE_LEAD, RtpReceiver
from voice.media.sender import PAYLOAD_TYPE

SSRC = 0x57E7
NETWORK = 0.005


class NullSink:
    async def write_frame(self, pcm: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


def voiced_packets(count: int) -> list[bytes]:
    """``count`` RTP packets of continuous voiced sound, loud enough never to count as a pause."""
    packets = []
    with OpusEncoder() as encoder:
        for seq in range(count):
            t = (np.arange(FRAME_SAMPLES) + seq * FRAME_SAMPLES) / SAMPLE_RATE
            wave = sum(
                a * np.sin(2 * np.pi * 150 * h * t) for h, a in ((1, 6000), (2, 3000), (3, 1500))
            )
            pcm = np.rint(wave).astype("<i2").tobytes()
            packet = RtpPacket(
                payload_type=PAYLOAD_TYPE,
                sequence_number=seq,
                timestamp=seq * FRAME_SAMPLES,
                ssrc=SSRC,
                payload=encoder.encode(pcm),
            )
            packets.append(packet.serialize())
    return packets


@dataclass
class Played:
    receiver: RtpReceiver
    delays_ms: list[float]  # the buffer's delay (decode margin + pending audio) after each tick
    frame_lengths: list[int]


def play(packets: list[bytes], arrival: Callable[[int], float], *, time_stretch: bool) -> Played:
    """Deliver packet k at ``arrival(k)`` (seconds) and tick the playout clock every 20 ms."""
    jitter = JitterBuffer(time_stretch=time_stretch)
    receiver = RtpReceiver(
        sink=NullSink(),
        decoder=OpusDecoder(),
        jitter=jitter,
        remote_ssrc=SSRC,
        on_report_block=lambda _block: None,
    )
    receiver.playing = True
    order = sorted(range(len(packets)), key=arrival)
    delays, lengths, sent = [], [], 0
    first_tick = arrival(0) + PHASE_LEAD
    for tick in range(len(packets)):
        now = first_tick + tick * FRAME_SECONDS
        while sent < len(order) and arrival(order[sent]) <= now:
            receiver.on_rtp(packets[order[sent]], arrival(order[sent]))
            sent += 1
        pcm, _real = receiver.tick(now)
        lengths.append(len(pcm))
        delays.append(jitter.stats.delay_ms)
    return Played(receiver, delays, lengths)


LATE = 100  # this packet comes 30 ms late: an underrun, and the delay grows by a frame


def one_late_packet(k: int) -> float:
    return k * FRAME_SECONDS + NETWORK + (0.030 if k == LATE else 0.0)


def test_after_a_late_packet_the_delay_returns_during_speech() -> None:
    packets = voiced_packets(300)
    stretched = play(packets, one_late_packet, time_stretch=True)
    control = play(packets, one_late_packet, time_stretch=False)
    before = stretched.delays_ms[LATE - 10]
    assert control.delays_ms[LATE - 10] == before
    for run in (stretched, control):
        assert run.receiver.jitter_buffer.stats.underruns == 1  # the late packet did hit both
        assert set(run.frame_lengths) == {FRAME_SAMPLES * 2}  # the sink got whole frames
    # Without stretching the extra frame of delay stays for as long as nobody pauses...
    assert min(control.delays_ms[LATE + 5 :]) > before + 15
    # ...with it, frames were shortened by pitch periods, none dropped, and within 300 ms the
    # delay is back where it was.
    assert stretched.receiver.playout.accelerated >= 2
    assert stretched.receiver.jitter_buffer.stats.dropped == 0
    assert abs(stretched.delays_ms[LATE + 15] - before) < 3
    assert max(abs(d - before) for d in stretched.delays_ms[LATE + 15 :]) < 3


def test_a_slow_sender_clock_is_followed_during_speech_without_underruns() -> None:
    """The sender's clock runs 0.2 % slow: every packet comes 40 us later than the last, so
    the margin shrinks by a frame in 10 s and speech never pauses for a whole-frame insert."""
    packets = voiced_packets(750)

    def drifting(k: int) -> float:
        return k * FRAME_SECONDS * 1.002 + NETWORK

    stretched = play(packets, drifting, time_stretch=True)
    control = play(packets, drifting, time_stretch=False)
    assert control.receiver.jitter_buffer.stats.underruns >= 1  # the control did starve
    jitter = stretched.receiver.jitter_buffer.stats
    assert jitter.underruns == 0
    assert stretched.receiver.playout.expanded >= 2
    assert stretched.receiver.playout.stretched_ms > 20  # it grew by pitch periods, in speech
