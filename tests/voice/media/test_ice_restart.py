"""ICE restart in the media transport: a new connection swapped in under running audio.

Two sessions on loopback connect and talk; both prepare a restart, exchange the parameters
and complete it: audio keeps flowing on the new pair (SRTP and sequence numbers carry on, so
nothing fails authentication) and the old sockets are closed. A lost connection (aioice gave
up on consent) does not stop the session: sends are dropped and counted until a restart.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from tests.support.media import connect_and_start
from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.errors import BadDescription, IceFailed, MediaError
from voice.media.session import MediaSession


@pytest.fixture
async def talking() -> AsyncIterator[tuple[MediaSession, MediaSession]]:
    alice = await MediaSession.create(controlling=True, source=ToneSource(440.0), sink=MemorySink())
    bob = await MediaSession.create(controlling=False, source=ToneSource(880.0), sink=MemorySink())
    try:
        await connect_and_start(alice, bob)
        await asyncio.wait_for(bob.first_audio.wait(), 5)
        await asyncio.wait_for(alice.first_audio.wait(), 5)
        yield alice, bob
    finally:
        await alice.close()
        await bob.close()


def _ports(session: MediaSession) -> list[int]:
    return [int(c.split()[5]) for c in session.local_description()["ice"]["candidates"]]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _restart(alice: MediaSession, bob: MediaSession) -> None:
    a_ice, b_ice = await asyncio.gather(alice.prepare_restart(), bob.prepare_restart())
    await asyncio.gather(
        alice.complete_restart(b_ice, timeout=5), bob.complete_restart(a_ice, timeout=5)
    )


async def test_restart_swaps_the_connection_and_audio_keeps_flowing(
    talking: tuple[MediaSession, MediaSession],
) -> None:
    alice, bob = talking
    old_ports = _ports(alice) + _ports(bob)
    old_ufrag = alice.local_description()["ice"]["ufrag"]
    a_ice = await alice.prepare_restart()
    assert set(a_ice) == {"ufrag", "pwd", "candidates"} and a_ice["ufrag"] != old_ufrag
    b_ice = await bob.prepare_restart()
    await asyncio.sleep(0.3)  # the old pair still carries the audio meanwhile
    before = (alice.stats().rtp_packets_received, bob.stats().rtp_packets_received)
    await asyncio.gather(
        alice.complete_restart(b_ice, timeout=5), bob.complete_restart(a_ice, timeout=5)
    )
    assert alice.local_description()["ice"] == a_ice  # the new connection is the current one
    async with asyncio.timeout(5):  # closed in the background: it may wait for the relay
        while not all(_port_is_free(p) for p in old_ports):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)
    for session, count in zip((alice, bob), before, strict=True):
        stats = session.stats()
        assert stats.rtp_packets_received > count + 15  # the receive loop moved on
        assert stats.auth_failures == 0 and stats.replays == 0 and stats.error is None
        assert stats.ice_connected and stats.ice_restarts == 1
        assert stats.path == "host (udp)"
    # and once more, to show the pending-connection bookkeeping resets
    await _restart(alice, bob)
    assert alice.stats().ice_restarts == 2


async def test_a_new_prepare_replaces_the_pending_one(
    talking: tuple[MediaSession, MediaSession],
) -> None:
    alice, bob = talking
    first = await alice.prepare_restart()
    second = await alice.prepare_restart()
    assert first["ufrag"] != second["ufrag"]
    assert _port_is_free(int(first["candidates"][0].split()[5]))  # the first was closed
    b_ice = await bob.prepare_restart()
    await asyncio.gather(
        alice.complete_restart(b_ice, timeout=5), bob.complete_restart(second, timeout=5)
    )
    assert alice.stats().ice_restarts == 1


async def test_a_failed_restart_keeps_the_current_connection(
    talking: tuple[MediaSession, MediaSession],
) -> None:
    alice, bob = talking
    with pytest.raises(MediaError, match="no ICE restart"):
        await alice.complete_restart({"ufrag": "abcd"}, timeout=1)
    pending = await alice.prepare_restart()
    with pytest.raises(BadDescription):
        await alice.complete_restart({"ufrag": "abcd", "pwd": "x", "candidates": []}, timeout=1)
    assert _port_is_free(int(pending["candidates"][0].split()[5]))
    await alice.prepare_restart()
    dead = {"ufrag": "abcd", "pwd": "a" * 22, "candidates": ["1 1 udp 100 127.0.0.1 9 typ host"]}
    with pytest.raises(IceFailed):
        await alice.complete_restart(dead, timeout=0.5)
    assert "peer offered host 127.0.0.1" in alice.attempted()
    before = bob.stats().rtp_packets_received
    await asyncio.sleep(0.3)
    assert bob.stats().rtp_packets_received > before + 5  # the old pair still works
    assert alice.stats().ice_connected and alice.stats().ice_restarts == 0


async def test_a_lost_connection_waits_for_a_restart(
    talking: tuple[MediaSession, MediaSession],
) -> None:
    alice, bob = talking
    # what aioice does when consent expires (RFC 7675): it closes the connection itself
    await alice._transport._connection.close()
    await asyncio.sleep(0.2)
    stats = alice.stats()
    assert not stats.ice_connected and stats.path is None and stats.error is None
    assert stats.packets_dropped_no_path > 0  # sends are dropped and counted
    received = stats.rtp_packets_received
    await asyncio.sleep(0.1)
    assert alice.stats().rtp_packets_received == received  # nothing comes in meanwhile
    await _restart(alice, bob)
    await asyncio.sleep(0.5)
    stats = alice.stats()
    assert stats.ice_connected and stats.rtp_packets_received > received + 10
    assert stats.error is None and stats.auth_failures == 0
