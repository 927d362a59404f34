"""voice.media.sender: RTP packetisation, silence after end of stream, pacing, loss adaptation,
round-trip time."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiortc.rtp import RtcpReceiverInfo, RtpPacket

from voice.audio.sources import ToneSource
from voice.media.clock import MediaClock
from voice.media.ladder import BitrateLadder
from voice.media.opus import OpusDecoder, OpusEncoder, OpusSettings
from voice.media.rtcp import ntp_middle32, ntp_time
from voice.media.sender import MAX_LOSS_PERC, MIN_LOSS_PERC, RtpSender, loss_perc_target


class RecordingEncoder(OpusEncoder):
    """The real encoder, remembering the loss percentages it was given."""

    def __init__(self) -> None:
        super().__init__(OpusSettings())
        self.loss_percs: list[int] = []

    def set_packet_loss_perc(self, perc: int) -> None:
        self.loss_percs.append(perc)
        super().set_packet_loss_perc(perc)


async def run_sender(
    frames: int, seconds: float
) -> tuple[list[tuple[float, RtpPacket]], RtpSender]:
    sent: list[tuple[float, RtpPacket]] = []
    loop = asyncio.get_running_loop()

    async def send_rtp(data: bytes) -> None:
        sent.append((loop.time(), RtpPacket.parse(data)))

    sender = RtpSender(
        source=ToneSource(440.0, duration_s=frames * 0.02),
        encoder=OpusEncoder(),
        send_rtp=send_rtp,
        ssrc=0xCAFE,
        initial_seq=65_530,
        initial_timestamp=2**32 - 960 * 2,
        initial_loss_perc=10,
    )
    clock = MediaClock(loop)  # a clock of its own, encoding inline on the loop thread
    task = asyncio.create_task(sender.run_clocked(clock))
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return sent, sender


async def test_packets_are_well_formed_and_continue_as_silence_after_the_source_ends() -> None:
    sent, sender = await run_sender(frames=5, seconds=0.5)
    packets = [p for _, p in sent]
    assert len(packets) >= 15  # ~25 ticks in 0.5 s; generous for a loaded machine
    assert sender.source_ended
    assert all(p.payload_type == 111 and p.ssrc == 0xCAFE for p in packets)
    assert [p.marker for p in packets] == [1] + [0] * (len(packets) - 1)
    for prev, nxt in itertools.pairwise(packets):
        assert nxt.sequence_number == (prev.sequence_number + 1) & 0xFFFF  # wraps at 65536
        assert nxt.timestamp == (prev.timestamp + 960) & 0xFFFF_FFFF  # wraps at 2**32
    assert {len(p.payload) for p in packets} == {100}  # CBR 40 kbps, tone and silence alike
    decoder = OpusDecoder()
    levels = [
        max(
            abs(int.from_bytes(decoder.decode(p.payload)[i : i + 2], "little", signed=True))
            for i in range(0, 1920, 2)
        )
        for p in packets
    ]
    assert max(levels[1:5]) > 2000  # the tone
    assert max(levels[-5:]) < 50  # silence after the end of the source


async def test_paced_by_absolute_deadlines() -> None:
    sent, _ = await run_sender(frames=1000, seconds=1.0)
    times = [t for t, _ in sent]
    span = times[-1] - times[0]
    # n packets cover n-1 intervals of 20 ms; no drift accumulates (loose bound: no timing target)
    assert abs(span - (len(times) - 1) * 0.02) < 0.02
    assert len(sent) >= 40


def report(ssrc: int, fraction_lost: int) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(ssrc, fraction_lost, 0, 0, 0, 0, 0)


def test_loss_target_is_smoothed_and_clamped() -> None:
    assert loss_perc_target(0, 4.0) == MIN_LOSS_PERC  # a clean report halves 4 %: clamped
    assert loss_perc_target(255, 30.0) == MAX_LOSS_PERC  # all lost: capped (FEC starves Opus)
    assert loss_perc_target(int(0.04 * 256), 3.0) == pytest.approx(3.5, abs=0.1)  # halfway


def test_receiver_reports_adapt_the_encoder() -> None:
    encoder = RecordingEncoder()

    async def nowhere(_: bytes) -> None:
        return None

    sender = RtpSender(
        source=ToneSource(),
        encoder=encoder,
        send_rtp=nowhere,
        ssrc=5,
        initial_seq=0,
        initial_timestamp=0,
        initial_loss_perc=10,
    )
    sender.on_report_block(report(ssrc=6, fraction_lost=128))  # about someone else: ignored
    assert encoder.loss_percs == []
    for _ in range(6):
        sender.on_report_block(report(ssrc=5, fraction_lost=int(0.25 * 256)))
    assert sender.loss_perc == MAX_LOSS_PERC and encoder.loss_percs[-1] == MAX_LOSS_PERC
    for _ in range(10):
        sender.on_report_block(report(ssrc=5, fraction_lost=0))
    assert sender.loss_perc == MIN_LOSS_PERC
    assert sender.remote_fraction_lost == 0


def test_receiver_reports_that_echo_our_sender_report_give_the_round_trip_time() -> None:
    wallclock = 1_700_000_000.0

    async def nowhere(_: bytes) -> None:
        return None

    sender = RtpSender(
        source=ToneSource(),
        encoder=OpusEncoder(),
        send_rtp=nowhere,
        ssrc=5,
        initial_seq=0,
        initial_timestamp=0,
        initial_loss_perc=10,
        wallclock=lambda: wallclock,
    )
    sent = ntp_middle32(ntp_time(wallclock - 0.25))  # our SR left 250 ms ago ...
    dlsr = int(0.2 * 65536)  # ... and the peer held it for 200 ms before reporting
    sender.on_report_block(RtcpReceiverInfo(6, 0, 0, 0, 0, sent, dlsr))  # someone else's
    assert sender.rtt_seconds is None
    sender.on_report_block(RtcpReceiverInfo(5, 0, 0, 0, 0, 0, 0))  # echoes no SR: no RTT
    assert sender.rtt_seconds is None
    sender.on_report_block(RtcpReceiverInfo(5, 0, 0, 0, 0, sent, dlsr))
    assert sender.rtt_seconds == pytest.approx(0.05, abs=0.001)
    sender.on_report_block(RtcpReceiverInfo(5, 0, 0, 0, 0, 0, 0))  # keeps the last RTT
    assert sender.rtt_seconds == pytest.approx(0.05, abs=0.001)


def test_the_ladder_sets_the_bitrate_and_fec_costs_bits_only_above_its_bottom_step() -> None:
    now = [0.0]

    async def nowhere(_: bytes) -> None:
        return None

    encoder = OpusEncoder()
    sender = RtpSender(
        source=ToneSource(),
        encoder=encoder,
        send_rtp=nowhere,
        ssrc=5,
        initial_seq=0,
        initial_timestamp=0,
        initial_loss_perc=10,
        fec_on_demand=True,
        ladder=BitrateLadder(),
        monotonic=lambda: now[0],
    )
    assert (sender.bitrate, sender.loss_perc, sender.max_bitrate) == (40_000, 0, 64_000)
    sender.on_report_block(report(ssrc=5, fraction_lost=5))  # one packet in ~50 lost
    assert encoder.bitrate == 48_000
    assert MIN_LOSS_PERC <= encoder.packet_loss_perc <= MAX_LOSS_PERC  # FEC armed
    while sender.bitrate > 40_000:
        now[0] += 1.0
        sender.on_report_block(report(ssrc=5, fraction_lost=0))
        assert now[0] < 30
    assert encoder.packet_loss_perc == 0  # back on the clean step: FEC costs nothing again
    assert len(encoder.encode(bytes(1920))) == 100
