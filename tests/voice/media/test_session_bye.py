"""The in-band hang-up and the honest "connected" signal, with two real sessions on loopback.

``send_bye()`` sends an authenticated RTCP BYE; the peer's ``peer_said_bye`` fires for it and for
nothing else: not for a BYE in clear, not for one under a wrong key. ``first_packet`` fires on
the peer's first RTP packet that passed SRTP authentication, never on ICE alone.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aioice import Candidate
from aiortc.rtp import RtcpRrPacket

from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.media.rtcp import bye_packet
from voice.media.session import MediaSession
from voice.media.srtp import SrtpContext


@dataclass
class Pair:
    a: MediaSession
    b: MediaSession
    a_to_b: bytes
    b_to_a: bytes

    async def connect(self) -> None:
        await asyncio.gather(
            self.a.connect(self.b.local_description()), self.b.connect(self.a.local_description())
        )

    def keys(self, *, b_rx: bytes | None = None) -> None:
        self.a.set_keys(tx=self.a_to_b, rx=self.b_to_a)
        self.b.set_keys(tx=self.b_to_a, rx=b_rx or self.a_to_b)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    a = await MediaSession.create(controlling=True, source=ToneSource(440), sink=MemorySink())
    b = await MediaSession.create(controlling=False, source=ToneSource(1000), sink=MemorySink())
    p = Pair(a, b, os.urandom(44), os.urandom(44))
    yield p
    await a.close()
    await b.close()


def _spoof(target: MediaSession, datagrams: list[bytes]) -> None:
    """Send datagrams to ``target``'s host candidate from a socket of our own."""
    candidate = Candidate.from_sdp(target.local_description()["ice"]["candidates"][0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, (candidate.host, candidate.port))


async def test_first_packet_waits_for_authenticated_rtp(pair: Pair) -> None:
    await pair.connect()
    await asyncio.sleep(0.1)
    assert not pair.a.first_packet.is_set() and not pair.b.first_packet.is_set()  # ICE alone
    pair.keys(b_rx=os.urandom(44))  # b cannot authenticate a's packets
    pair.a.start()
    pair.b.start()
    await asyncio.wait_for(pair.a.first_packet.wait(), 5)
    await asyncio.sleep(0.3)
    assert not pair.b.first_packet.is_set()
    sa, sb = pair.a.stats(), pair.b.stats()
    assert sb.auth_failures > 5 and sb.first_packet_at is None and sb.last_rtp_at is None
    assert sa.first_packet_at is not None and sa.last_rtp_at is not None
    assert sa.started_at is not None and sa.first_packet_at >= sa.started_at
    assert sa.last_rtp_at > sa.first_packet_at
    assert asyncio.get_running_loop().time() - sa.last_rtp_at < 0.1  # still flowing


async def test_a_bye_from_the_peer_is_heard_and_a_forged_one_is_not(pair: Pair) -> None:
    assert not await pair.a.send_bye()  # neither ICE nor keys yet: nothing to send
    await pair.connect()
    assert not await pair.a.send_bye()  # ICE, but no keys yet
    pair.keys()
    pair.a.start()
    pair.b.start()
    await asyncio.wait_for(
        asyncio.gather(pair.a.first_packet.wait(), pair.b.first_packet.wait()), 5
    )
    # Forgeries naming a's SSRC: in clear, and under a key that is not a's.
    forged = bytes(RtcpRrPacket(ssrc=pair.a.ssrc, reports=[])) + bye_packet(pair.a.ssrc)
    before = pair.b.stats()
    _spoof(pair.b, [forged, SrtpContext(os.urandom(44), os.urandom(44)).protect_rtcp(forged)])
    await asyncio.sleep(0.3)
    after = pair.b.stats()
    # They reached b's SRTCP check (aioice passes data from any address) and were refused.
    refused = after.auth_failures + after.malformed - before.auth_failures - before.malformed
    assert refused == 2
    assert not pair.b.peer_said_bye.is_set()

    sent_before = pair.a.stats().rtcp_packets_sent
    assert await pair.a.send_bye()
    await asyncio.wait_for(pair.b.peer_said_bye.wait(), 1)
    assert pair.a.stats().rtcp_packets_sent - sent_before >= 3  # three copies, for loss
    assert not pair.a.peer_said_bye.is_set()  # our own BYE is not the peer's
    await pair.a.close()
    assert not await pair.a.send_bye()  # closed: nothing


async def test_a_bye_under_the_wrong_key_is_not_heard(pair: Pair) -> None:
    await pair.connect()
    pair.keys(b_rx=os.urandom(44))
    pair.a.start()
    pair.b.start()
    await asyncio.wait_for(pair.a.first_packet.wait(), 5)
    assert await pair.a.send_bye()
    await asyncio.sleep(0.2)
    assert not pair.b.peer_said_bye.is_set()
    assert pair.b.stats().auth_failures > 0
