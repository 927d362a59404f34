"""Time-stretching in the receive path: a late packet or a clock drift does not shift the rest of
the call, and the buffer shrinks and grows during speech, not only in pauses.

A real Opus stream of continuous voiced sound (a 150 Hz pitch with harmonics: never a pause) goes
through a real RtpReceiver and JitterBuffer, ticked on a simulated 20 ms playout clock; packet
arrival times are chosen per test. The same stream without time-stretching is the control.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from voice.audio.base import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from voice.media.jitter import JitterBuffer
from voice.media.opus import OpusDecoder, OpusEncoder
from voice.media.receiver import GUARD_MS, PHASE_LEAD, RtpReceiver
from voice.media.sender import PAYLOAD_TYPE

SSRC = 0x57E7
NETWORK = 0.005


class NullSink:
    async def write_frame(self, pcm: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


def voiced_packets(count: int, pause: range = range(0)) -> list[bytes]:
    """``count`` RTP packets of continuous voiced sound, loud enough never to count as a pause,
    except for the frames in ``pause`` (digital silence)."""
    packets = []
    with OpusEncoder() as encoder:
        for seq in range(count):
            t = (np.arange(FRAME_SAMPLES) + seq * FRAME_SAMPLES) / SAMPLE_RATE
            wave = sum(
                a * np.sin(2 * np.pi * 150 * h * t) for h, a in ((1, 6000), (2, 3000), (3, 1500))
            )
            pcm = np.rint(wave if seq not in pause else 0 * t).astype("<i2").tobytes()
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
    jitter = JitterBuffer(time_stretch=time_stretch, guard_ms=GUARD_MS)
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


LATE = 100  # the sender stalls here
PAUSE = range(150, 170)  # the speaker pauses for 400 ms


def stall(seconds: float) -> Callable[[int], float]:
    """Arrivals on time, except that packets sent during a ``seconds`` stall at ``LATE`` come
    out of it together."""

    def arrival(k: int) -> float:
        on_time = k * FRAME_SECONDS + NETWORK
        return max(on_time, LATE * FRAME_SECONDS + NETWORK + seconds) if k >= LATE else on_time

    return arrival


def test_one_extra_frame_waits_for_a_pause_and_then_goes_gradually() -> None:
    packets = voiced_packets(300, pause=PAUSE)
    stretched = play(packets, stall(0.040), time_stretch=True)
    control = play(packets, stall(0.040), time_stretch=False)
    before = stretched.delays_ms[LATE - 10]
    assert control.delays_ms[LATE - 10] == before
    for run in (stretched, control):
        assert run.receiver.jitter_buffer.stats.underruns == 1  # the stall did starve both
        assert set(run.frame_lengths) == {FRAME_SAMPLES * 2}  # the sink got whole frames
        # The extra frame of delay stays while the speaker talks: no stretch mid-word for it.
        assert min(run.delays_ms[LATE + 2 : PAUSE.start]) > before + 15
        assert run.delays_ms[PAUSE.stop + 5] == pytest.approx(before, abs=3)  # gone after it
    assert stretched.receiver.playout.accelerated >= 2
    assert stretched.receiver.jitter_buffer.stats.dropped == 0
    # Without stretching the pause loses a whole frame at once; with it, 10 ms at most per tick.
    in_pause = slice(PAUSE.start, PAUSE.stop + 5)
    assert max_step(control.delays_ms[in_pause]) == pytest.approx(20, abs=1)
    assert max_step(stretched.delays_ms[in_pause]) <= 10.5


def test_a_long_stall_is_made_up_during_speech() -> None:
    """A 100 ms stall leaves the buffer 4 frames deeper: more than is worth a wait for a pause."""
    packets = voiced_packets(600)  # 12 s without a pause
    stretched = play(packets, stall(0.100), time_stretch=True)
    control = play(packets, stall(0.100), time_stretch=False)
    before = stretched.delays_ms[LATE - 10]
    assert min(control.delays_ms[LATE + 10 :]) > before + 75  # no pause: it all stays
    assert stretched.receiver.playout.accelerated >= 4
    assert stretched.receiver.jitter_buffer.stats.dropped == 0
    # Two frames more than the stall's jitter now asks for go at once; the rest as that
    # jitter estimate decays (3 s half-life).
    assert max(stretched.delays_ms[LATE + 10 :]) < before + 60
    assert max(stretched.delays_ms[-50:]) < before + 40


def max_step(delays: list[float]) -> float:
    return max(abs(b - a) for a, b in itertools.pairwise(delays))


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
    assert stretched.receiver.playout.stretched_ms >= 19  # it grew by pitch periods, in speech
