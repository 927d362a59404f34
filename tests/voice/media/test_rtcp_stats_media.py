"""voice.media.rtcp: RFC 5761 demux and RFC 3550 reception statistics (pure)."""

from __future__ import annotations

from aiortc.rtp import RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket, RtpPacket

from voice.media.rtcp import ReceptionStats, is_rtcp, ntp_time, round_trip_seconds


def test_demux_rtp_from_rtcp() -> None:
    audio = RtpPacket(payload_type=111, marker=1, sequence_number=1, ssrc=1).serialize()
    assert not is_rtcp(audio)  # marker + PT 111 = 239, outside 192..223
    assert not is_rtcp(RtpPacket(payload_type=111, sequence_number=1, ssrc=1).serialize())
    assert is_rtcp(bytes(RtcpRrPacket(ssrc=1)))
    sr = RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(0, 0, 0, 0))
    assert is_rtcp(bytes(sr))
    assert not is_rtcp(b"\x80")


def test_fraction_lost_per_interval_and_cumulative() -> None:
    stats = ReceptionStats(ssrc=9, clock_rate=48_000)
    seq = 65_500  # crosses the 16-bit wrap
    for i in range(100):
        if i % 10 != 3:  # lose 10 of 100
            stats.update((seq + i) & 0xFFFF, i * 960, i * 0.02)
    block = stats.report_block(now=2.0)
    assert block.ssrc == 9
    assert block.packets_lost == 10
    assert block.fraction_lost == (10 << 8) // 100
    assert block.highest_sequence == seq + 99  # extended: includes the cycle
    for i in range(100, 150):  # a clean interval
        stats.update((seq + i) & 0xFFFF, i * 960, i * 0.02)
    block = stats.report_block(now=3.0)
    assert block.fraction_lost == 0
    assert block.packets_lost == 10


def test_duplicates_and_reordering_do_not_count_as_loss() -> None:
    stats = ReceptionStats(ssrc=1, clock_rate=48_000)
    for seq in (10, 12, 11, 12, 13):
        stats.update(seq, seq * 960, seq * 0.02)
    assert stats.report_block(now=1.0).fraction_lost == 0
    assert stats.extended_max_seq == 13


def test_jitter_is_zero_for_a_perfect_clock_and_grows_with_jitter() -> None:
    steady = ReceptionStats(ssrc=1, clock_rate=48_000)
    shaky = ReceptionStats(ssrc=1, clock_rate=48_000)
    for i in range(200):
        steady.update(i, i * 960, i * 0.02)
        shaky.update(i, i * 960, i * 0.02 + (0.01 if i % 2 else 0.0))
    assert steady.jitter_seconds < 1e-4
    assert 0.005 < shaky.jitter_seconds < 0.015


def test_round_trip_from_lsr_and_dlsr() -> None:
    receiver = ReceptionStats(ssrc=1, clock_rate=48_000)
    receiver.update(1, 0, 0.0)
    sent_at = 1_700_000_000.0
    receiver.note_sender_report(ntp_time(sent_at), arrival=10.0)  # 10 ms on the way out
    block = receiver.report_block(now=10.5)  # held 500 ms
    rtt = round_trip_seconds(block, sent_at + 0.010 + 0.5 + 0.010)
    assert rtt is not None and abs(rtt - 0.020) < 0.001


def test_a_loss_after_a_clean_report_is_flagged_until_a_report_tells_it() -> None:
    stats = ReceptionStats(ssrc=1, clock_rate=48_000)
    for seq in range(10):
        stats.update(seq, seq * 960, seq * 0.02)
    assert not stats.loss_unreported  # nothing lost, nothing reported yet
    stats.update(11, 11 * 960, 0.22)  # 10 is missing
    assert stats.loss_unreported
    assert stats.report_block(now=0.3).fraction_lost > 0
    assert not stats.loss_unreported  # that report told the peer
    stats.update(13, 13 * 960, 0.26)  # 12 is missing, but the last report already showed loss
    assert not stats.loss_unreported
    stats.report_block(now=1.3)
    for seq in range(14, 30):  # a clean interval, reported clean
        stats.update(seq, seq * 960, seq * 0.02)
    assert stats.report_block(now=2.3).fraction_lost == 0
    stats.update(31, 31 * 960, 0.62)  # 30 is missing: flagged again
    assert stats.loss_unreported
