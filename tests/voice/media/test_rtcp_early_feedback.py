"""Early RTCP feedback: the first loss after a clean report arms the peer's FEC at once.

Regular reports come every 0.75-1.25 s; without early feedback a call that starts on a lossy
link would send its first second or so without FEC. Two real sessions on loopback; the caller
loses exactly one packet (the tenth), about 200 ms into the call. Early reports are capped at
one per regular interval, whatever the packets look like.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.support.media import connect_and_start
from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.media.rtcp import ReceptionStats
from voice.media.rtcpsched import RTCP_INTERVAL
from voice.media.session import MediaSession

LOST_PACKET = 10
SECONDS_WATCHED = 3.0


class DropOne:
    """Drops exactly one packet, the ``index``-th the sender sends (from 1)."""

    def __init__(self, index: int) -> None:
        self._index = index
        self._sent = 0

    def drop(self) -> bool:
        self._sent += 1
        return self._sent == self._index


async def test_one_loss_arms_the_peers_fec_before_any_regular_report() -> None:
    loop = asyncio.get_running_loop()
    a = await MediaSession.create(
        controlling=True, source=ToneSource(), sink=MemorySink(), loss=DropOne(LOST_PACKET)
    )
    b = await MediaSession.create(controlling=False, source=ToneSource(), sink=MemorySink())
    try:
        await asyncio.gather(a.connect(b.local_description()), b.connect(a.local_description()))
        k1, k2 = os.urandom(44), os.urandom(44)
        a.set_keys(tx=k1, rx=k2)
        b.set_keys(tx=k2, rx=k1)
        assert a.stats().encoder_loss_perc == 0  # FEC costs nothing on a clean link
        started = loop.time()
        a.start()
        b.start()
        async with asyncio.timeout(5):
            while a.stats().encoder_loss_perc == 0:  # noqa: ASYNC110 - set by RTCP
                await asyncio.sleep(0.005)
        armed_after = loop.time() - started
        sa, sb = a.stats(), b.stats()
    finally:
        await a.close()
        await b.close()
    assert sa.packets_dropped_by_filter == 1
    assert sb.rtcp_early_reports == 1
    # The report that armed it was the early one: the callee had sent no regular report yet.
    assert sb.rtcp_packets_sent == 1
    assert armed_after < 0.75 * RTCP_INTERVAL  # the earliest a regular report could have come
    assert sa.remote_fraction_lost is not None and sa.remote_fraction_lost > 0


async def test_reordering_or_a_hostile_peer_gets_at_most_one_early_report_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worst case: every packet looks like a fresh unreported loss (as swapped pairs do, or a
    peer that skips sequence numbers after each of our clean reports)."""
    monkeypatch.setattr(ReceptionStats, "loss_unreported", property(lambda self: True))
    a = await MediaSession.create(controlling=True, source=ToneSource(), sink=MemorySink())
    b = await MediaSession.create(controlling=False, source=ToneSource(), sink=MemorySink())
    try:
        await connect_and_start(a, b)
        await asyncio.sleep(SECONDS_WATCHED)
        sb = b.stats()
    finally:
        await a.close()
        await b.close()
    intervals = SECONDS_WATCHED / (0.75 * RTCP_INTERVAL) + 1
    assert sb.rtp_packets_received > 100  # ~50 packets a second each flagged a loss
    assert 1 <= sb.rtcp_early_reports <= intervals
    assert sb.rtcp_packets_sent <= 2 * intervals
