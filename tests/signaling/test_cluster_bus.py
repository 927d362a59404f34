"""One instance's bus on a real redis-server, driven step by step: races between a login's claim
and registering the sessions again after a reconnection, a connection loop that must outlive
a failure while registering, per-address counts that land after their connection gave up, and
envelopes routed in batches (one script, one message per receiving instance).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from signaling.bus import BusUnavailable, RedisBus
from signaling.busmessages import Envelope, Envelopes, encode, parse
from signaling.cluster import Cluster
from signaling.config import Config
from signaling.handoff import Forward
from signaling.registry import MemoryRegistry
from signaling.router import Action, Router
from tests.signaling.cluster_helpers import RedisServer, eventually
from tests.signaling.test_cluster_router import claim, cluster_router
from tests.signaling.test_signaling_router import Clock, frames, send

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def _nothing() -> None:
    pass


def _bus(
    redis: RedisServer, instance: str, on_resync: Callable[[], Awaitable[None]] = _nothing
) -> RedisBus:
    return RedisBus(redis.url, instance, on_message=lambda data: None, on_resync=on_resync)


@pytest.fixture
async def buses(redis: RedisServer) -> AsyncIterator[list[RedisBus]]:
    """Instances "A" and "B", connected."""
    made = [_bus(redis, "A"), _bus(redis, "B")]
    for bus in made:
        await bus.start()
        assert bus.up
    yield made
    for bus in made:
        await bus.stop()


def presence(redis: RedisServer, user: str) -> bytes:
    return redis.command("HGET", "voice:presence", user).strip()


def writers() -> int:
    """The bus writer tasks running in this event loop."""
    running = [task for task in asyncio.all_tasks() if not task.done()]
    return sum(getattr(t.get_coro(), "__qualname__", "") == "RedisBus._write" for t in running)


async def test_registering_again_never_overwrites_a_newer_claim_of_this_instance(
    buses: list[RedisBus], redis: RedisServer
) -> None:
    a, b = buses
    await a.claim("alice", 1)
    await b.claim("carol", 5)
    # Redis came back: A lists its open sessions (alice's session 1 among them), but alice's
    # login again on A (session 2) has claimed her in the meantime, before the list lands.
    assert (await a.claim("alice", 2))[0] == "A 1"
    lost = await a.resync([("alice", 1), ("bob", 3), ("carol", 4)], {})
    assert lost == ["carol"]  # another instance holds her: A closes its stale session
    assert presence(redis, "alice") == b"A 2"  # the newer claim stands
    assert presence(redis, "bob") == b"A 3"  # nobody held him: registered again
    # Session 1 is replaced by 2 and ends: its release must not forget session 2.
    assert not await a.release("alice", 1, "[null, 1, 1, 0]")
    assert presence(redis, "alice") == b"A 2"
    assert await b.route("alice", "for alice")  # and the other instance still finds her on A
    assert redis.command("SISMEMBER", "voice:users:A", "alice").strip() == b"1"


async def test_a_failing_resync_ends_that_connection_and_the_bus_connects_again(
    redis: RedisServer,
) -> None:
    calls = 0

    async def resync() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug while registering the sessions again")

    bus = _bus(redis, "A", resync)
    await bus.start(wait=3.0)  # the first connection fails in on_resync; the loop goes on
    try:
        assert bus.up and calls == 2 and bus.reconnects == 1
        assert await bus.admit("10.0.0.0", 10)
        assert writers() == 1
    finally:
        await bus.stop()


async def test_a_connection_that_fails_while_registering_leaves_no_writer_behind(
    redis: RedisServer,
) -> None:
    calls = 0

    async def resync() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise BusUnavailable("redis went away while registering")

    bus = _bus(redis, "A", resync)
    await bus.start(wait=3.0)
    try:
        assert bus.up and calls == 3
        assert writers() == 1  # one writer: those of the failed connections were ended
        results = await asyncio.gather(*(bus.admit(f"10.0.{i}.0", 10) for i in range(200)))
        assert all(results)
    finally:
        await bus.stop()


async def test_a_count_that_lands_after_its_connection_gave_up_is_taken_back(
    redis: RedisServer,
) -> None:
    router = Router(Config(db=""), MemoryRegistry(), cluster=True)
    cluster = Cluster(router, redis.url, lambda actions: None, ack_timeout=0.2)
    await cluster.start()
    try:
        loop = asyncio.get_running_loop()
        resumes = loop.time() + 0.6
        redis.command("CLIENT", "PAUSE", "600", "ALL")  # Redis holds every command meanwhile
        assert await cluster.admit("10.0.1.0") is None  # no answer in time: not counted here
        handler = asyncio.create_task(cluster.admit("10.0.2.0"))
        await asyncio.sleep(0.05)
        handler.cancel()  # the connection's handler goes away while its count is in flight
        with pytest.raises(asyncio.CancelledError):
            await handler
        await asyncio.sleep(resumes - loop.time() + 0.05)  # both counts reached Redis now

        async def taken_back() -> None:  # ...and nobody would ever have unadmitted them
            assert redis.command("HGETALL", "voice:conns").split() == []
            assert redis.command("HGETALL", f"voice:conns:{cluster.instance}").split() == []

        await eventually(taken_back, 2.0)
    finally:
        await cluster.stop()


async def test_one_route_script_sends_one_message_per_instance_in_order(
    redis: RedisServer,
) -> None:
    got: dict[str, list[bytes]] = {"B": [], "C": []}
    made = [_bus(redis, "A")]
    for name in ("B", "C"):
        made.append(RedisBus(redis.url, name, on_message=got[name].append, on_resync=_nothing))
    for bus in made:
        await bus.start()
    a, b, c = made
    try:
        await b.claim("bob", 1)
        await b.claim("carol", 2)
        await c.claim("dave", 3)
        # Erin's instance is alive by its heartbeat but nobody listens on its channel.
        redis.command("ZADD", "voice:instances", "99999999999999", "D")
        redis.command("HSET", "voice:presence", "erin", "D 4")
        batch = [
            Envelope(f"A:{i}", "A", to, "alice", f"m{i}")
            for i, to in enumerate(["bob", "nobody", "dave", "carol", "erin", "bob"])
        ]
        published = await a.route_many([(e.to, encode(e)) for e in batch])
        assert published == [True, False, True, True, False, True]

        async def arrived() -> None:
            assert len(got["B"]) == 1 and len(got["C"]) == 1

        await eventually(arrived, 5)
        assert parse(got["B"][0]) == Envelopes((batch[0], batch[3], batch[5]))  # in order
        assert parse(got["C"][0]) == batch[2]  # one alone goes as itself
        assert await a.route_many([]) == []
    finally:
        for bus in made:
            await bus.stop()


async def test_forwards_of_one_iteration_share_a_message_and_each_sender_is_answered(
    redis: RedisServer,
) -> None:
    clock = Clock()
    router_a, router_b = cluster_router(clock), cluster_router(clock)
    for name, key in (("bob", b"\x01"), ("carol", b"\x02")):  # registered; not on A
        router_a.registry.claim(name, key * 32)
    to_a: list[Action] = []
    to_b: list[Action] = []
    a_side = Cluster(router_a, redis.url, to_a.extend, ack_timeout=0.5)
    b_side = Cluster(router_b, redis.url, to_b.extend, ack_timeout=0.5)
    received: list[bytes] = []
    deliver_on_b = b_side.bus._on_message

    def spy(data: bytes) -> None:
        received.append(data)
        deliver_on_b(data)

    b_side.bus._on_message = spy
    for side in (a_side, b_side):
        await side.start()
    try:
        alice, bob = claim(router_a, "alice"), claim(router_b, "bob")
        await b_side.bus.claim("bob", bob)

        def sends(*to: str) -> None:  # in one loop iteration, as frames read together are
            for i, name in enumerate(to):
                for action in router_a.receive(alice, send(name, f"{name}{i}")):
                    assert isinstance(action, Forward)
                    a_side.carry_out(action)

        sends("bob", "carol", "bob")

        async def answered() -> None:
            assert len(frames(to_a, alice)) == 3

        await eventually(answered, 5)
        answers = {f["id"]: f for f in frames(to_a, alice)}
        assert answers["bob0"]["type"] == answers["bob2"]["type"] == "sent"
        assert answers["carol1"]["code"] == "offline"  # nobody holds carol: at once
        assert len(received) == 1  # both of bob's envelopes in one bus message
        assert [f["type"] for f in frames(to_b, bob)] == ["deliver", "deliver"]

        b_side.bus._on_message = received.append  # B stops handling (and acknowledging)
        to_a.clear()
        sends("bob")
        await asyncio.sleep(0.2)
        assert frames(to_a) == []  # not answered before the acknowledgement timeout
        await eventually(_one_frame(to_a), 2)
        assert "did not confirm" in frames(to_a, alice)[0]["message"]
        # Every batch's timer has fired (the earlier ones first): nothing is left behind.
        assert a_side._pending == {} and a_side._timers == {}
    finally:
        for side in (a_side, b_side):
            await side.stop()


def _one_frame(actions: list[Action]) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        assert len(frames(actions)) == 1

    return check
