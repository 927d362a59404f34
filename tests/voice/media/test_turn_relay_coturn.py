"""A call relayed through a real coturn, with credentials in the signaling server's format.

The relay is untrusted like the server: it forwards SRTP and never holds a key. These tests
show that the credentials ``signaling.turn`` issues are the ones coturn accepts (and that stale
or forged ones are refused), and that audio flows when every candidate is a relay candidate.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from signaling.turn import turn_credentials, turn_label
from tests.support.coturn import Coturn, running_coturn
from tests.support.media import connect_and_start
from voice.audio.sinks import MemorySink
from voice.audio.sources import ToneSource
from voice.errors import IceFailed
from voice.media.ice import IceServers, TurnServer
from voice.media.session import MediaSession


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    with running_coturn(tmp_path_factory.mktemp("coturn")) as server:
        yield server


def _turn(coturn: Coturn, user: str, *, ttl: int = 600, secret: bytes | None = None) -> IceServers:
    username, password = turn_credentials(secret or coturn.secret, user, ttl, time.time())
    return IceServers(turn=(TurnServer(coturn.host, coturn.port, username, password),))


def _dominant_hz(frames: list[bytes]) -> float:
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * 48_000 / len(samples))


@pytest.fixture
async def relayed_pair(
    coturn: Coturn,
) -> AsyncIterator[tuple[MediaSession, MediaSession, MemorySink]]:
    sink = MemorySink()
    alice = await MediaSession.create(
        controlling=True,
        source=ToneSource(440.0),
        sink=MemorySink(),
        ice_servers=_turn(coturn, "alice"),
        relay_only=True,
    )
    bob = await MediaSession.create(
        controlling=False,
        source=ToneSource(1000.0),
        sink=sink,
        ice_servers=_turn(coturn, "bob"),
        relay_only=True,
    )
    yield alice, bob, sink
    await alice.close()
    await bob.close()


async def test_audio_flows_through_coturn_with_relay_candidates_only(
    coturn: Coturn, relayed_pair: tuple[MediaSession, MediaSession, MemorySink]
) -> None:
    alice, bob, bob_hears = relayed_pair
    for session in (alice, bob):
        candidates = session.local_description()["ice"]["candidates"]
        assert candidates, "no relay candidate was allocated"
        assert all(" typ relay" in c for c in candidates), candidates
    await connect_and_start(alice, bob)
    await asyncio.wait_for(bob.first_audio.wait(), 10)
    await asyncio.sleep(1.0)
    heard = [f for f in bob_hears.frames if any(f)]
    assert len(heard) >= 25
    assert abs(_dominant_hz(heard[-25:]) - 440.0) < 5.0
    assert bob.stats().auth_failures == 0
    log = coturn.log.read_text()
    for user in ("alice", "bob"):  # by pseudonym: coturn's log, like the wire, has no name
        label = turn_label(coturn.secret, user)
        assert re.search(rf"user <\d+:{label}>: incoming packet ALLOCATE processed, success", log)
        assert user not in log


@pytest.mark.parametrize("kind", ["expired", "forged"])
async def test_coturn_refuses_stale_or_forged_credentials(coturn: Coturn, kind: str) -> None:
    user = f"mallory-{kind}"
    bad = (
        _turn(coturn, user, ttl=-60)
        if kind == "expired"
        else _turn(coturn, user, secret=b"not-the-shared-secret")
    )
    with pytest.raises(IceFailed):
        session = await MediaSession.create(
            controlling=True,
            source=ToneSource(),
            sink=MemorySink(),
            ice_servers=bad,
            relay_only=True,
            ice_timeout=3.0,
        )
        try:
            peer = await MediaSession.create(
                controlling=False, source=ToneSource(), sink=MemorySink(), ice_timeout=3.0
            )
            try:
                await asyncio.gather(
                    session.connect(peer.local_description()),
                    peer.connect(session.local_description()),
                )
            finally:
                await peer.close()
        finally:
            await session.close()
    log = coturn.log.read_text()
    label = turn_label(b"not-the-shared-secret" if kind == "forged" else coturn.secret, user)
    assert re.search(rf"user <\d+:{label}>: incoming packet message processed, error 401", log)
    assert not re.search(rf"user <\d+:{label}>: incoming packet ALLOCATE processed, success", log)
