"""Three signaling instances on one Redis act as one server (issue 15, items 1 and 4).

Real parts only: a redis-server, three ``python -m signaling`` processes sharing it (and one
registry file and server id), real clients over WebSockets, real phones with real media for
the call. Covered: a call from a user on instance 1 to a user on instance 3; envelopes both
ways, in order, once each; presence (online elsewhere, offline, unknown); newest session wins
across instances; a bus message repeated on Redis is delivered once; an envelope whose
recipient's instance does not acknowledge gives the sender an error in bounded time.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from signaling.busmessages import Batch, parse
from signaling.cluster import ACK_TIMEOUT
from tests.integration.conftest import User, wait_until
from tests.signaling.cluster_helpers import (
    Instance,
    RedisServer,
    login,
    start_instances,
)
from voice.errors import RecipientOffline, SessionReplaced, UnknownUser
from voice.net.client import SignalingClient
from voice.phone import Call, Phone

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Instance]]:
    directory = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(directory)
    redis.start()
    instances = start_instances(directory, redis.url, 3)
    yield instances
    for instance in instances:
        instance.stop()
    redis.stop()


async def test_a_user_on_instance_1_calls_a_user_on_instance_3(
    deployment: list[Instance], tmp_path: Path
) -> None:
    alice, bob = User("callera", tmp_path / "a"), User("calleeb", tmp_path / "b")
    pa = await Phone.connect(alice.config(deployment[0].url), audio=alice.audio)
    pb = await Phone.connect(bob.config(deployment[2].url), audio=bob.audio, auto_answer=True)
    try:
        out = await pa.call("calleeb")
        await out.wait_connected(20)
        incoming = pb.calls[0]
        await incoming.wait_connected(20)
        assert out.sas is not None and out.sas == incoming.sas  # the same keys: no one between
        await wait_until(lambda: _audio_in(out) >= 10, 10)  # audio from bob arrives
        await out.hangup()
        await incoming.wait_ended(10)
    finally:
        await asyncio.gather(pa.close(), pb.close())


async def test_envelopes_cross_instances_both_ways_in_order_and_once(
    deployment: list[Instance], clients: list[SignalingClient]
) -> None:
    a = await login(clients, "orda", deployment[0])
    b = await login(clients, "ordb", deployment[2])
    bodies = [f"m{i}".encode() for i in range(30)]
    await asyncio.gather(*(a.send("ordb", body) for body in bodies))
    got = [await asyncio.wait_for(b.receive(), 5) for _ in bodies]
    assert [d.body for d in got] == bodies and {d.from_user for d in got} == {"orda"}
    await b.send("orda", b"back")
    assert (await asyncio.wait_for(a.receive(), 5)).body == b"back"
    await asyncio.sleep(0.3)
    assert b._deliveries.empty()  # nothing more: each envelope exactly once


async def test_presence_holds_across_instances(
    deployment: list[Instance], clients: list[SignalingClient]
) -> None:
    a = await login(clients, "presa", deployment[0])
    b = await login(clients, "presb", deployment[1])
    await a.send("presb", b"1")  # online on another instance: delivered
    assert (await asyncio.wait_for(b.receive(), 5)).body == b"1"
    await b.close()
    # the instance has seen the close (its presence is released, or routes to no session)
    await wait_until(lambda: deployment[1].health().get("logged_in", 1) == 0, 5)
    with pytest.raises(RecipientOffline):  # registered, no session anywhere
        await a.send("presb", b"2")
    with pytest.raises(UnknownUser):
        await a.send("nobodyhere", b"3")
    b2 = await login(clients, "presb", deployment[2])  # back, on yet another instance
    await a.send("presb", b"4")
    assert (await asyncio.wait_for(b2.receive(), 5)).body == b"4"
    health = [i.health()["logged_in"] for i in deployment]
    assert sum(health) >= 2 and health[1] == 0  # each session counted where it is


async def test_the_newest_session_wins_across_instances(
    deployment: list[Instance], clients: list[SignalingClient]
) -> None:
    a = await login(clients, "newa", deployment[0])
    old = await login(clients, "newb", deployment[1])
    new = await login(clients, "newb", deployment[2])
    with pytest.raises(SessionReplaced):  # the old session is told, then closed
        await asyncio.wait_for(old.receive(), 5)
    assert old._ws.close_code == 4003
    await a.send("newb", b"to the newest")
    assert (await asyncio.wait_for(new.receive(), 5)).body == b"to the newest"


async def test_an_envelope_repeated_on_the_bus_is_delivered_once(
    deployment: list[Instance], clients: list[SignalingClient]
) -> None:
    a = await login(clients, "dupa", deployment[0])
    b = await login(clients, "dupb", deployment[2])
    channel = f"voice:inst:{deployment[2].health()['instance']}"
    spy = Redis.from_url(deployment[0].redis_url)
    pubsub = spy.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        await a.send("dupb", b"once")
        assert (await asyncio.wait_for(b.receive(), 5)).body == b"once"
        captured = await _next_envelope(pubsub)
        batch = parse(captured)
        assert isinstance(batch, Batch) and [e[1] for e in batch.envelopes] == ["dupb"]
        before = deployment[2].metric("signaling_bus_duplicates_dropped_total")
        for _ in range(3):  # replayed on the bus, as a faulty network or Redis could
            assert await spy.publish(channel, captured) == 2  # the instance and the spy
        await asyncio.sleep(0.5)
        assert b._deliveries.empty()
        assert deployment[2].metric("signaling_bus_duplicates_dropped_total") == before + 3
    finally:
        await pubsub.aclose()
        await spy.aclose()


async def test_an_unacknowledged_envelope_gives_the_sender_an_error(
    deployment: list[Instance], clients: list[SignalingClient]
) -> None:
    a = await login(clients, "acka", deployment[0])
    b = await login(clients, "ackb", deployment[1])
    loop = asyncio.get_running_loop()
    deployment[1].proc.send_signal(signal.SIGSTOP)  # alive for Redis, but not answering
    try:
        started = loop.time()
        with pytest.raises(RecipientOffline, match="did not confirm"):
            await a.send("ackb", b"lost?")
        assert ACK_TIMEOUT <= loop.time() - started < ACK_TIMEOUT + 1.5
    finally:
        deployment[1].proc.send_signal(signal.SIGCONT)
    # At most once: it may still arrive once its instance runs again, but never twice.
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(b.receive(), 1.0))
        except TimeoutError:
            break
    assert [d.body for d in got] in ([], [b"lost?"])


def _audio_in(call: Call) -> int:
    stats = call.media_stats()
    return 0 if stats is None else stats.rtp_packets_received


async def _next_envelope(pubsub: PubSub) -> bytes:
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and b"\ne" in message["data"]:  # an envelope line
                return bytes(message["data"])
