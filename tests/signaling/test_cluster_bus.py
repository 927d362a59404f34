"""One instance's bus on a real redis-server, driven step by step: races between a login's claim
and registering the sessions again after a reconnection, a connection loop that must outlive
a failure while registering, per-address counts that land after their connection gave up, and
envelopes routed in batches (one script, one message per receiving instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from signaling.bus import COMMAND_TIMEOUT, BusUnavailable, RedisBus
from signaling.busmessages import (
    Batch,
    BusMessageError,
    ack_lines,
    envelope_line,
    header,
    parse,
)
from signaling.cluster import KICK_TIMEOUT, Admission, Cluster
from signaling.config import Config
from signaling.handoff import Allowances, Claim, Forward, Left, Outcome
from signaling.protocol import CloseCode, deliver_frame
from signaling.registry import MemoryRegistry
from signaling.router import Action, Router
from tests.signaling.cluster_helpers import RedisServer, eventually
from tests.signaling.helpers import make_user
from tests.signaling.test_cluster_router import claim, cluster_router
from tests.signaling.test_signaling_router import Clock, closes, frames, send

pytestmark = pytest.mark.timeout(30)


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


async def _resync(
    bus: RedisBus, sessions: list[tuple[str, int]], conns: dict[str, int]
) -> list[str]:
    """What a reconnection registers: the sessions, then the connection counts."""
    lost = await bus.resync_users(sessions)
    await bus.resync_conns(lambda: conns)
    return lost


def presence(redis: RedisServer, user: str) -> bytes:
    return redis.command("HGET", "voice:presence", user).strip()


async def connections(redis: RedisServer, expected: int) -> int:
    """Clients connected to Redis, besides the redis-cli that asks, once it is ``expected``
    (Redis sees a close a moment after it) or after a second."""
    for _ in range(50):
        count = len(redis.command("CLIENT", "LIST").splitlines()) - 1
        if count == expected:
            break
        await asyncio.sleep(0.02)
    return count


def heartbeats() -> int:
    """The bus heartbeat tasks running in this event loop."""
    running = [task for task in asyncio.all_tasks() if not task.done()]
    return sum(getattr(t.get_coro(), "__qualname__", "") == "RedisBus._beat" for t in running)


async def test_registering_again_never_overwrites_a_newer_claim_of_this_instance(
    buses: list[RedisBus], redis: RedisServer
) -> None:
    a, b = buses
    await a.claim("alice", 1)
    await b.claim("carol", 5)
    # Redis came back: A lists its open sessions (alice's session 1 among them), but alice's
    # login again on A (session 2) has claimed her in the meantime, before the list lands.
    assert (await a.claim("alice", 2))[0] == "A 1"
    lost = await _resync(a, [("alice", 1), ("bob", 3), ("carol", 4)], {})
    assert lost == ["carol"]  # another instance holds her: A closes its stale session
    assert presence(redis, "alice") == b"A 2"  # the newer claim stands
    assert presence(redis, "bob") == b"A 3"  # nobody held him: registered again
    # Session 1 is replaced by 2 and ends: its release must not forget session 2.
    assert await a.release([("alice", 1, "[null, 1, 1, 0]")]) == 0
    assert presence(redis, "alice") == b"A 2"
    line = envelope_line(1, "alice", "bob", deliver_frame("bob", "AAAA"))
    assert await b.flush(header("B"), line, []) == b"1"  # B still finds her on A
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
        assert await connections(redis, 2) == 2  # commands, subscription: the failed pair closed
        assert heartbeats() == 1
    finally:
        await bus.stop()


async def test_a_connection_that_fails_while_registering_leaves_no_connection_behind(
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
        # One pair of connections and one heartbeat: those of the failed connections ended.
        assert await connections(redis, 2) == 2
        assert heartbeats() == 1
        results = await asyncio.gather(*(bus.admit(f"10.0.{i}.0", 10) for i in range(200)))
        assert all(results)
    finally:
        await bus.stop()


async def test_the_redis_password_reaches_no_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"unix://:hunter2@{tmp_path / 'nobody-here.sock'}"  # unreachable: logged, retried
    bus = RedisBus(url, "A", on_message=lambda data: None, on_resync=_nothing)
    with caplog.at_level(logging.DEBUG):
        await bus.start(wait=0.3)
        await bus.stop()
    logged = " ".join(str(vars(record)) for record in caplog.records)  # messages and fields
    assert "redis_unreachable" in logged and "nobody-here.sock" in logged
    assert "hunter2" not in logged
    assert "hunter2" not in repr(bus.address)


async def test_a_redis_that_hangs_is_lost_and_found_again(redis: RedisServer) -> None:
    bus = RedisBus(
        redis.url, "A", on_message=lambda data: None, on_resync=_nothing, heartbeat_interval=0.1
    )
    await bus.start()
    try:
        assert bus.up and redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)  # connections stay open; nothing is answered
        waiting = asyncio.ensure_future(bus.admit("10.0.0.0", 10))
        await until(lambda: not bus.up, COMMAND_TIMEOUT + 2)  # the heartbeat gave up
        with pytest.raises(BusUnavailable):
            await waiting  # failed, not left waiting for a Redis that may never answer
        with pytest.raises(BusUnavailable):
            await bus.admit("10.0.0.0", 10)  # at once while down
        redis.proc.send_signal(signal.SIGCONT)
        await until(lambda: bus.up, COMMAND_TIMEOUT + 3)
        assert await bus.admit("10.0.0.0", 10)
        assert await connections(redis, 2) == 2  # the hung pair was closed, not leaked
    finally:
        if redis.proc is not None:
            redis.proc.send_signal(signal.SIGCONT)
        await bus.stop()


async def test_a_lost_subscription_alone_makes_the_bus_connect_again(redis: RedisServer) -> None:
    got: list[bytes] = []
    bus = RedisBus(redis.url, "A", on_message=got.append, on_resync=_nothing)
    await bus.start()
    try:
        redis.command("CLIENT", "KILL", "TYPE", "pubsub")  # the command connection stays
        await until(lambda: bus.reconnects == 1 and bus.up, 5)
        redis.command("PUBLISH", "voice:inst:A", "hello")  # subscribed again
        await until(lambda: got == [b"hello"], 5)
    finally:
        await bus.stop()


async def test_a_redis_that_hangs_while_sessions_are_registered_is_lost_too(
    redis: RedisServer,
) -> None:
    calls = 0
    assert redis.proc is not None

    async def resync() -> None:  # Redis stops answering just as the sessions are registered
        nonlocal calls
        calls += 1
        if calls == 1:
            assert redis.proc is not None
            redis.proc.send_signal(signal.SIGSTOP)
            await bus.resync_users([("alice", 1)])

    bus = _bus(redis, "A", resync)
    await bus.start(wait=0.5)
    try:
        await until(lambda: calls == 1 and not bus.up, COMMAND_TIMEOUT + 2)  # not up and silent
        redis.proc.send_signal(signal.SIGCONT)
        await until(lambda: bus.up and calls >= 2, COMMAND_TIMEOUT + 6)
        assert await bus.admit("10.0.0.0", 10)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
        await bus.stop()


async def test_stopping_while_a_lost_connection_is_cleaned_up_leaves_none_open(
    redis: RedisServer,
) -> None:
    bus = _bus(redis, "A")
    await bus.start()
    redis.command("CLIENT", "KILL", "TYPE", "pubsub")  # the loop starts closing the pair
    await until(lambda: not bus.up, 5, step=0)  # each loop pass: in the cleanup, not after
    assert not bus.up and bus.reconnects == 0  # in the cleanup, not connected again yet
    await bus.stop()  # cancels the loop at an await of its cleanup
    assert await connections(redis, 0) == 0


class FreezingProxy:
    """A unix-socket relay to Redis whose ``n``-th connection can go silent: it stays open
    and nothing passes either way (a half-dead path, where only a timeout tells)."""

    def __init__(self, path: Path, redis: RedisServer) -> None:
        self.path, self.redis = path, redis
        self.flowing: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._relay, str(self.path))

    def freeze(self, n: int) -> None:
        self.flowing[n].clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flowing = asyncio.Event()
        flowing.set()
        self.flowing.append(flowing)
        up_reader, up_writer = await asyncio.open_unix_connection(str(self.redis.socket))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, flowing))
            self._tasks.add(task)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, flowing: asyncio.Event
    ) -> None:
        try:
            while data := await source.read(65_536):
                await flowing.wait()
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


async def test_a_subscription_that_goes_silent_is_noticed_by_its_ping(
    redis: RedisServer, tmp_path: Path
) -> None:
    proxy = FreezingProxy(tmp_path / "relay.sock", redis)
    await proxy.start()
    got: list[bytes] = []
    bus = RedisBus(
        f"unix://{proxy.path}", "A", on_message=got.append, on_resync=_nothing,
        heartbeat_interval=0.2,
    )  # fmt: skip
    await bus.start()
    try:
        assert len(proxy.flowing) == 2  # commands first, then the subscription
        proxy.freeze(1)  # commands and heartbeats go on; the subscription hears nothing
        await until(lambda: bus.reconnects == 1, COMMAND_TIMEOUT + 2)
        await until(lambda: bus.up, 5)
        redis.command("PUBLISH", "voice:inst:A", "hello")  # heard on the new subscription
        await until(lambda: got == [b"hello"], 5)
    finally:
        await bus.stop()
        await proxy.stop()


async def until(condition: Callable[[], bool], limit: float, step: float = 0.05) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"not within {limit} s")
        await asyncio.sleep(step)


async def test_a_count_that_lands_late_counts_while_open_and_is_taken_back_once_closed(
    redis: RedisServer,
) -> None:
    router = Router(Config(db=""), MemoryRegistry(), cluster=True)
    cluster = Cluster(router, redis.url, lambda actions: None, ack_timeout=0.2)
    await cluster.start()
    try:
        loop = asyncio.get_running_loop()
        resumes = loop.time() + 0.6
        redis.command("CLIENT", "PAUSE", "600", "ALL")  # Redis holds every command meanwhile
        slow = await cluster.admit("10.0.1.0")  # no answer in time: not counted for now
        assert not slow.counted and not slow.full
        handler = asyncio.create_task(cluster.admit("10.0.2.0"))
        await asyncio.sleep(0.05)
        handler.cancel()  # the connection's handler goes away while its count is in flight
        with pytest.raises(asyncio.CancelledError):
            await handler
        await asyncio.sleep(resumes - loop.time() + 0.05)  # both counts reached Redis now

        def counts() -> list[bytes]:
            return redis.command("HGETALL", "voice:conns").split()

        async def only_the_open_one() -> None:  # the cancelled one's count was taken back
            assert counts() == [b"10.0.1.0", b"1"] and slow.counted

        await eventually(only_the_open_one, 2.0)
        cluster.unadmit(slow)  # the slow one's connection closes: counted out too

        async def none() -> None:
            assert counts() == []
            assert redis.command("HGETALL", f"voice:conns:{cluster.instance}").split() == []

        await eventually(none, 2.0)
    finally:
        await cluster.stop()


async def test_one_flush_script_sends_one_message_per_instance_in_order(
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
        to = ["bob", "nobody", "dave", "carol", "erin", "bob"]
        records = [(i, name, "alice", f"m{i}A==") for i, name in enumerate(to)]
        lines = "\n".join(envelope_line(*e) for e in records)
        # what the receiving instance makes of each: the deliver frame, from the record
        batch = [
            (i, name, sender, deliver_frame(sender, body)) for i, name, sender, body in records
        ]
        acks = [("C", ack_lines([7, 8], [(9, Outcome.OFFLINE)]))]  # C gets its answers too
        assert await a.flush(header("A"), lines, acks) == b"101101"

        async def arrived() -> None:
            assert len(got["B"]) == 1 and len(got["C"]) == 1

        await eventually(arrived, 5)
        assert parse(got["B"][0]) == Batch("A", [batch[0], batch[3], batch[5]])  # in order
        assert parse(got["C"][0]) == Batch("A", [batch[2]], [(7, 8)], [(9, Outcome.OFFLINE)])
        assert await a.flush(header("A"), "", []) == b""
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


async def test_a_batch_is_delivered_once_and_acknowledged_for_what_was_delivered_only() -> None:
    clock = Clock()
    router = cluster_router(clock, max_queue=1)
    out: list[Action] = []
    cluster = Cluster(router, "unix:///nonexistent", out.extend)  # the bus is never started
    bob, carol = claim(router, "bob"), claim(router, "carol")
    router.receive(bob, send("carol"))  # carol's delivery waits in her queue: it is full
    router.written(bob)  # bob's answer went out: his is not
    lines = [
        envelope_line(n, to, "alice", "AAAA") for n, to in ((5, "bob"), (6, "dave"), (7, "carol"))
    ]
    cluster._on_message("\n".join([header("A"), *lines]).encode())
    assert frames(out, bob) == [{"v": 1, "type": "deliver", "from": "alice", "body": "AAAA"}]
    assert frames(out, carol) == []
    # Handed over: 5 alone. Dave is not here, carol's queue is full: each says so.
    assert cluster._acks == {"A": ([5], [(6, Outcome.OFFLINE), (7, Outcome.QUEUE_FULL)])}
    out.clear()
    router.written(bob)
    replay = "\n".join([header("A"), lines[0], envelope_line(4, "bob", "alice", "AAAA")])
    cluster._on_message(replay.encode())  # a repeat, and an id older than the last taken
    assert out == [] and cluster.seen.duplicates == 2
    assert cluster._acks["A"][0] == [5]  # nothing delivered, nothing more acknowledged
    cluster._acks.clear()


async def test_acknowledgements_answer_only_envelopes_still_waiting_for_one() -> None:
    router = cluster_router(Clock())
    out: list[Action] = []
    cluster = Cluster(router, "unix:///nonexistent", out.extend)
    alice = claim(router, "alice")
    for i in (1, 2, 3):
        cluster._pending[i] = Forward(alice, f"m{i}", "bob", "alice", "AAAA")
    # A range far wider than what waits (forged, or late) walks only what waits.
    cluster._on_message(b"v2 B\na0-99999999999999\nx2 offline")
    assert [f["id"] for f in frames(out, alice)] == ["m1", "m2", "m3"]
    assert all(f["type"] == "sent" for f in frames(out, alice))  # one answer each, the first
    assert cluster._pending == {}


async def test_acknowledgements_of_a_burst_go_in_messages_a_receiver_accepts() -> None:
    """9,000 envelopes from one origin delivered out of order (ids with gaps: about one line
    each) are acknowledged in several scripts, each message under the parser's limit."""
    router = cluster_router(Clock())
    cluster = Cluster(router, "unix:///nonexistent", lambda actions: None)
    scripts: list[list[tuple[str, str]]] = []

    def flush(header: str, envelopes: str, acks: list[tuple[str, str]]) -> asyncio.Future[bytes]:
        scripts.append(acks)
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        done.set_result(b"")
        return done

    cluster.bus.flush = flush  # type: ignore[method-assign]
    cluster._acks = {"A": (list(range(1, 18_000, 2)), [(2, Outcome.OFFLINE)])}
    cluster._flush()
    assert len(scripts) > 1 and all(len(acks) == 1 for acks in scripts)  # one chunk each
    for acks in scripts:
        ((origin, lines),) = acks
        message = parse(f"v2 B\n{lines}")  # what A's instance receives
        assert isinstance(message, Batch) and origin == "A"
    delivered = [n for acks in scripts for lo, hi in parse(f"v2 B\n{acks[0][1]}").delivered
                 for n in range(lo, hi + 1)]  # fmt: skip
    assert delivered == list(range(1, 18_000, 2))


async def test_a_failed_script_of_acknowledgements_only_leaves_envelope_timers_alone() -> None:
    router = cluster_router(Clock())
    out: list[Action] = []
    cluster = Cluster(router, "unix:///nonexistent", out.extend)
    alice = claim(router, "alice")
    loop = asyncio.get_running_loop()
    cluster._pending[1] = Forward(alice, "m1", "bob", "alice", "AAAA")
    cluster._timers[1] = timer = loop.call_later(60, cluster._expire, 1, 1)
    failed: asyncio.Future[bytes] = loop.create_future()
    failed.set_exception(BusUnavailable("gone"))
    # Acknowledgements only (no envelope, numbered like the next batch), not published:
    cluster._published(1, 0, failed)
    assert cluster._timers == {1: timer} and not timer.cancelled() and out == []
    timer.cancel()


async def test_a_delivery_that_fails_midway_still_sends_and_acknowledges_the_ones_before() -> None:
    router = cluster_router(Clock())
    out: list[Action] = []
    cluster = Cluster(router, "unix:///nonexistent", out.extend)
    bob = claim(router, "bob")
    real = router.deliver_remote

    def deliver(from_user: str, to: str, frame: str) -> tuple[list[Action], Outcome]:
        if to == "carol":
            raise RuntimeError("a bug")
        return real(from_user, to, frame)

    router.deliver_remote = deliver  # type: ignore[method-assign]
    lines = [envelope_line(1, "bob", "alice", "AAAA"), envelope_line(2, "carol", "alice", "AAAA")]
    with pytest.raises(RuntimeError):
        cluster._take(parse("\n".join([header("A"), *lines])))  # type: ignore[arg-type]
    assert len(frames(out, bob)) == 1  # bob's envelope went out ...
    assert cluster._acks == {"A": ([1], [])}  # ... and is the one acknowledged
    cluster._acks.clear()


def test_a_record_makes_the_deliver_frame_of_its_own_sender_and_nothing_else() -> None:
    message = parse("v2 A\n" + envelope_line(3, "bob", "alice", "c2VhbGVk"))
    assert isinstance(message, Batch)
    assert message.envelopes == [(3, "bob", "alice", deliver_frame("alice", "c2VhbGVk"))]
    bad = [
        envelope_line(3, "bob", "alice", 'AAAA"}, {"type":"welcome'),  # not base64
        envelope_line(3, "bob", 'alice","type":"x', "AAAA"),  # not a username
        envelope_line(3, "Bob!", "alice", "AAAA"),
    ]
    for line in bad:
        with pytest.raises(BusMessageError):
            parse("v2 A\n" + line)


async def test_thousands_leaving_at_once_cost_a_few_scripts_not_one_each(
    redis: RedisServer,
) -> None:
    """An instance losing its clients at once (a network blip, a load balancer failing over)
    released each session and uncounted each connection with a script of its own: 20,000
    scripts queued on one connection held its heartbeat back past the 2 s deadline, and the
    bus reconnected and registered everything again. They now go in one pass's batch."""
    side = Cluster(cluster_router(Clock()), redis.url, lambda actions: None)
    await side.start()
    try:
        n = 2_500
        sessions = [(f"u{i:04d}", i) for i in range(n)]
        net = "198.51.100.0/24"
        await _resync(side.bus, sessions, {net: n})
        await side.bus.claim("u0000", 99_999)  # u0000 logged in again here: kept
        scripts: list[str] = []
        names = {sha: name for name, sha in side.bus._sha.items()}
        submit = side.bus._submit

        def counted(*args: Any) -> asyncio.Future[Any]:
            scripts.append(names.get(args[1], args[0]))
            return submit(*args)

        side.bus._submit = counted  # type: ignore[method-assign]
        admissions = side._admitted = {Admission(net, side._epoch) for _ in range(n)}
        for admission in admissions:
            admission.counted = True  # as the resync above counted them
        kept = Allowances(None, 1.0, 1.0, 0.0)
        for (user, sid), admission in zip(sessions, list(admissions), strict=True):
            side.left(Left(user, sid, kept))  # one loop pass, as when every socket closes
            side.unadmit(admission)

        async def released() -> None:
            assert redis.command("HLEN", "voice:presence").strip() == b"1"

        await eventually(released, 5)
        await eventually(_no_tasks(side), 5)
        ours = sorted(s for s in scripts if s != "heartbeat")
        assert ours == ["release"] * 3 + ["unadmit"]  # 1,000 sessions a script
        assert presence(redis, "u0000") == f"{side.instance} 99999".encode()
        assert redis.command("HGET", "voice:conns", net).strip() == b""  # all counted out
        assert redis.command("EXISTS", "voice:allow:u0001").strip() == b"1"  # kept
        assert redis.command("EXISTS", "voice:allow:u0000").strip() == b"0"  # not its session
    finally:
        await side.stop()


def _no_tasks(side: Cluster) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        assert not side._tasks

    return check


async def test_a_close_counted_out_in_a_pass_goes_before_the_next_count(
    redis: RedisServer,
) -> None:
    """A connection that closed and a new one from the same address in one loop pass: at the
    per-address limit, the new one is admitted only if the close reaches Redis first."""
    side = Cluster(cluster_router(Clock()), redis.url, lambda actions: None, per_ip_limit=1)
    await side.start()
    try:
        net = "198.51.100.0/24"
        first = await side.admit(net)  # the address is at its limit
        assert first.counted and not first.full
        side.unadmit(first)  # ... its connection closes
        second = await side.admit(net)  # and another opens in the same pass
        assert second.counted and not second.full
        assert redis.command("HGET", "voice:conns", net).strip() == b"1"
    finally:
        await side.stop()


async def test_a_loop_that_stalls_before_a_command_leaves_does_not_lose_the_bus(
    redis: RedisServer,
) -> None:
    """Under load an instance's loop pass can take seconds. A command issued in such a pass
    is written only at its end; timed from its issue, it missed its deadline before Redis
    was even asked, and the bus dropped and registered everything again (seen with 77,568
    clients on two cores). Its deadline now runs from the write."""
    bus = _bus(redis, "A")
    await bus.start()
    try:
        loop = asyncio.get_running_loop()
        publishing = asyncio.create_task(bus.publish("nobody", "x"))
        loop.call_soon(time.sleep, COMMAND_TIMEOUT + 0.5)  # the same pass, after the issue
        assert await publishing == 0  # answered: nobody listens on that channel
        assert bus.up and bus.reconnects == 0
    finally:
        await bus.stop()


def fail_the_next_release(side: Cluster, why: str) -> list[BusUnavailable]:
    """The next release script of ``side`` fails with ``why``; the list empties once it did."""
    real_release = side.bus.release
    failures = [BusUnavailable(why)]

    async def release(departures: Sequence[tuple[str, int, str]]) -> int:
        if failures:
            raise failures.pop()
        return await real_release(departures)

    side.bus.release = release  # type: ignore[method-assign]
    return failures


async def test_sessions_that_end_while_the_bus_is_down_are_released_when_it_is_back(
    redis: RedisServer,
) -> None:
    """Releases that could not reach Redis were dropped: the resync only added sessions, so
    Redis kept the ended ones as present (envelopes went to an instance that no longer held
    the user) and their allowances were lost (the next login started with full buckets)."""
    router = cluster_router(Clock())
    side = Cluster(router, redis.url, lambda actions: None, heartbeat_interval=0.2)
    await side.start()
    assert redis.proc is not None
    try:
        sids = {name: claim(router, name) for name in ("alice", "bob", "dave", "erin")}
        for name, sid in sids.items():
            await side.bus.claim(name, sid)
        await side.bus.claim("carol", 777)  # a session no longer here: its release was lost
        # A Redis restored from an older snapshot names an earlier session of erin's here.
        redis.command("HSET", "voice:presence", "erin", f"{side.instance} 555")
        failures = fail_the_next_release(side, "the connection dropped with the release on it")
        kept = Allowances(None, 1.0, 2.0, 0.0)
        alice = router.disconnect(sids["alice"])  # her release fails on the way
        assert alice is not None
        side.left(Left(alice.user, alice.session, kept))
        await until(lambda: not failures, 2)
        redis.proc.send_signal(signal.SIGSTOP)  # Redis hangs: its data stays
        await until(lambda: not side.bus.up, COMMAND_TIMEOUT + 2)
        dave = router.disconnect(sids["dave"])  # his ends while the bus is down
        assert dave is not None
        side.left(Left(dave.user, dave.session, kept))
        await asyncio.sleep(0.1)
        redis.proc.send_signal(signal.SIGCONT)
        await until(lambda: side.bus.up, COMMAND_TIMEOUT + 3)

        async def healed() -> None:
            for gone in ("alice", "dave", "carol"):
                assert presence(redis, gone) == b"", gone
            assert presence(redis, "erin") == f"{side.instance} {sids['erin']}".encode()

        await eventually(healed, 5)
        assert presence(redis, "bob") == f"{side.instance} {sids['bob']}".encode()
        members = redis.command("SMEMBERS", f"voice:users:{side.instance}").split()
        assert sorted(members) == [b"bob", b"erin"]
        for user in ("alice", "dave"):  # their allowances were kept for the next login
            stored = redis.command("GET", f"voice:allow:{user}").strip()
            assert Allowances.decode(stored.decode()) == Allowances(None, 1.0, 2.0, 0.0)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
        await side.stop()


async def test_a_late_release_keeps_the_allowances_unless_newer_ones_are_stored(
    buses: list[RedisBus], redis: RedisServer
) -> None:
    """A release that reaches Redis late (the bus was down) may find its instance swept as dead
    meanwhile, presence and all: the levels the session ended with are kept all the same, but
    never over those of a later session."""
    a, b = buses
    await a.claim("alice", 1)
    redis.command("ZADD", "voice:instances", "0", "A")  # A missed its heartbeats ...
    await b._script("heartbeat", "B", 4_000)  # ... and B swept it, alice's presence with it
    assert presence(redis, "alice") == b""
    assert await a.release([("alice", 1, "[null, 1.0, 2.0, 100.0]")]) == 0  # nothing to forget
    stored = redis.command("GET", "voice:allow:alice").strip().decode()
    assert Allowances.decode(stored) == Allowances(None, 1.0, 2.0, 100.0)  # kept all the same
    assert await a.release([("alice", 7, "[null, 9.0, 9.0, 50.0]")]) == 0  # an older session's
    stored = redis.command("GET", "voice:allow:alice").strip().decode()
    assert Allowances.decode(stored) == Allowances(None, 1.0, 2.0, 100.0)  # the newer stand
    await b.claim("alice", 3)  # she is on B now: a late release of A's never touches hers
    assert await a.release([("alice", 1, "[null, 0.0, 0.0, 200.0]")]) == 0
    stored = redis.command("GET", "voice:allow:alice").strip().decode()
    assert Allowances.decode(stored) == Allowances(None, 1.0, 2.0, 100.0)


async def test_what_redis_holds_for_an_instance_is_read_in_batches_and_drops_users_taken(
    buses: list[RedisBus], redis: RedisServer
) -> None:
    a, b = buses
    sessions = [(f"u{i:04d}", i) for i in range(2_500)]  # more than one batch
    await _resync(a, sessions, {})
    await b.claim("u0007", 9_999)  # taken by B since
    scripts: list[str] = []
    script = a._script

    async def counted(name: str, *args: object) -> object:
        scripts.append(name)
        return await script(name, *args)

    a._script = counted  # type: ignore[method-assign]
    held = await a.registered()
    assert sorted(held) == [s for s in sessions if s[0] != "u0007"]
    assert scripts.count("registered") >= 3  # 1,000 users a script, about
    assert redis.command("SISMEMBER", "voice:users:A", "u0007").strip() == b"0"


async def test_releases_kept_after_an_error_reply_go_with_the_next_ones(
    redis: RedisServer,
) -> None:
    """An error reply (Redis out of memory, say) fails a release without dropping the
    connection: no reconnection would ever send it again."""
    router = cluster_router(Clock())
    side = Cluster(router, redis.url, lambda actions: None)
    await side.start()
    try:
        sids = {name: claim(router, name) for name in ("alice", "bob")}
        for name, sid in sids.items():
            await side.bus.claim(name, sid)
        failures = fail_the_next_release(side, "redis: OOM command not allowed")
        kept = Allowances(None, 1.0, 2.0, 0.0)
        for name in ("alice", "bob"):  # alice's release fails; bob's goes later, on its own
            gone = router.disconnect(sids[name])
            assert gone is not None
            side.left(Left(gone.user, gone.session, kept))
            await until(lambda: not failures and not side._tasks, 2)

        async def released() -> None:
            for user in ("alice", "bob"):
                assert presence(redis, user) == b"", user
                assert redis.command("EXISTS", f"voice:allow:{user}").strip() == b"1", user

        await eventually(released, 5)
        assert side.bus.reconnects == 0
    finally:
        await side.stop()


@dataclass
class _Side:
    """One instance of a test deployment: its router, its cluster, the actions applied."""

    router: Router
    cluster: Cluster
    applied: list[Action]


@contextlib.asynccontextmanager
async def _instances(redis: RedisServer, count: int) -> AsyncIterator[list[_Side]]:
    """``count`` started instances on ``redis`` sharing one clock; stopped at the end."""
    clock = Clock()
    sides = []
    for _ in range(count):
        router, applied = cluster_router(clock), []
        sides.append(_Side(router, Cluster(router, redis.url, applied.extend), applied))
    for side in sides:
        await side.cluster.start()
    try:
        yield sides
    finally:
        for side in sides:
            await side.cluster.stop()


def _start_login(router: Router, name: str) -> tuple[int, Claim]:
    """A login up to its claim (which the test hands to the cluster)."""
    sid, actions = router.connect("10.0.0.1")
    router.written(sid)
    out = router.receive(sid, make_user(name, seed=len(name)).login_frame(frames(actions)[0]))
    assert len(out) == 1 and isinstance(out[0], Claim)
    return sid, out[0]


def _slow_kicks(side: Cluster, delay: float) -> None:
    """``side`` answers kicks ``delay`` s late (a busy instance)."""
    heard = side.bus._on_message
    side.bus._on_message = lambda data: asyncio.get_running_loop().call_later(delay, heard, data)


async def test_two_logins_on_one_instance_end_with_the_newer_one_whatever_order_claims_finish(
    redis: RedisServer,
) -> None:
    """The older login's claim waits for a slow kick of the user's session elsewhere while a
    newer login on the same instance claims after it and finishes first. The older one used
    to finish last and close the newer one, leaving Redis naming a closed session (the user
    then looked offline to every other instance). Now the newer claim closes the older login."""
    async with _instances(redis, 2) as (one, two):
        rx, x, to_x, rz, z = one.router, one.cluster, one.applied, two.router, two.cluster
        await z.bus.claim("alice", claim(rz, "alice"))  # alice is on Z, which is slow to answer
        _slow_kicks(z, 0.5)
        older, older_claim = _start_login(rx, "alice")
        x.carry_out(older_claim)  # claims, then waits for Z's answer to its kick
        await asyncio.sleep(0.1)
        newer, newer_claim = _start_login(rx, "alice")
        x.carry_out(newer_claim)  # claims after it in Redis: finds the older login here
        await asyncio.sleep(1.0)
        assert (older, CloseCode.REPLACED, "replaced") in closes(to_x)
        assert not any(sid == newer for sid, _, _ in closes(to_x))
        assert rx.logged_in_session(newer)
        assert presence(redis, "alice") == f"{x.instance} {newer}".encode()


async def test_a_login_abandoned_before_its_claim_claims_and_kicks_nothing(
    redis: RedisServer,
) -> None:
    async with _instances(redis, 2) as (one, two):
        rx, x, rz, z, to_z = one.router, one.cluster, two.router, two.cluster, two.applied
        on_z = claim(rz, "alice")
        await z.bus.claim("alice", on_z)
        sid, login = _start_login(rx, "alice")
        x.carry_out(login)
        assert rx.disconnect(sid) is None  # the socket closed before the claim went out
        await asyncio.sleep(0.3)
        assert closes(to_z) == []  # the user's session on Z stays
        assert presence(redis, "alice") == f"{z.instance} {on_z}".encode()


@pytest.mark.parametrize("where", ["elsewhere", "here"])
async def test_a_login_abandoned_after_its_claim_gives_the_user_back_to_the_open_session(
    redis: RedisServer, where: str
) -> None:
    """Redis took the claim, then the socket closed before anything was kicked: the user's
    session (on another instance, or open on this one) is still connected, so presence must
    name it again, not nobody (it would look offline everywhere else until it reconnected)."""
    async with _instances(redis, 2) as (one, two):
        rx, x, rz, z, to_z = one.router, one.cluster, two.router, two.cluster, two.applied
        home, home_router = (z, rz) if where == "elsewhere" else (x, rx)
        open_sid = claim(home_router, "alice")
        await home.bus.claim("alice", open_sid)
        sid, login = _start_login(rx, "alice")
        x.carry_out(login)
        await asyncio.sleep(0)  # the claim is on its way to Redis...
        assert rx.disconnect(sid) is None  # ... and the socket closes before its answer
        await asyncio.sleep(0.3)
        assert closes(to_z) == [] and home_router.logged_in_session(open_sid)
        assert presence(redis, "alice") == f"{home.instance} {open_sid}".encode()


async def test_a_login_abandoned_while_its_kick_is_out_keeps_the_user_allowances(
    redis: RedisServer,
) -> None:
    """Closing a login at once used to hand the kicked session's token levels to nobody: the
    user's next login started with full directory and TURN allowances (a way around them)."""
    async with _instances(redis, 2) as (one, two):
        rx, x, rz, z, to_z = one.router, one.cluster, two.router, two.cluster, two.applied
        on_z = claim(rz, "alice")
        await z.bus.claim("alice", on_z)
        _slow_kicks(z, 0.2)
        sid, login = _start_login(rx, "alice")
        x.carry_out(login)
        await asyncio.sleep(0.1)  # claimed; the kick is out
        assert rx.disconnect(sid) is None
        await asyncio.sleep(0.5)
        assert [c[0] for c in closes(to_z)] == [on_z]  # newest wins: it was told
        assert presence(redis, "alice") == b""  # the abandoned login holds nobody
        kept = Allowances.decode(redis.command("GET", "voice:allow:alice").strip())
        assert kept is not None and kept.messages is not None  # the kicked session's levels


async def test_connections_open_across_a_redis_outage_are_counted_once_and_out_once(
    redis: RedisServer,
) -> None:
    """A connection accepted while the bus was down is counted by the resync (the instance's
    share is replaced by what is open), so its close must count it out; one that closed
    while the resync registered sessions must not be counted back in."""
    router = cluster_router(Clock())
    side = Cluster(router, redis.url, lambda actions: None)
    await side.start()
    net = "10.0.0.0"

    def counted() -> bytes:
        return redis.command("HGET", "voice:conns", net).strip()

    try:
        before = await side.admit(net)  # counted while the bus is up
        redis.stop()
        await until(lambda: not side.bus.up, 5)
        during = await side.admit(net)  # the bus is down: not counted for now
        assert not during.counted
        leaving = await side.admit(net)
        register = side.bus.resync_users

        async def close_meanwhile(sessions: Sequence[tuple[str, int]]) -> list[str]:
            lost = await register(sessions)
            side.unadmit(leaving)  # a connection closes while the sessions are registered
            return lost

        side.bus.resync_users = close_meanwhile  # type: ignore[method-assign]
        redis.start()
        await until(lambda: side.bus.up, 10)
        await eventually(lambda: _equal(counted(), b"2"), 3)  # before and during, not leaving
        side.unadmit(during)
        side.unadmit(before)
        await eventually(lambda: _equal(counted(), b""), 3)  # nothing left behind
    finally:
        await side.stop()


async def _equal(got: bytes, wanted: bytes) -> None:
    assert got == wanted


async def test_an_answer_that_fails_leaves_the_batch_s_other_senders_answered() -> None:
    router = cluster_router(Clock())
    out: list[Action] = []
    side = Cluster(router, "unix:///nonexistent", out.extend, ack_timeout=0.05)
    alice = claim(router, "alice")
    exists = router.registry.exists

    def flaky(user: str) -> bool:
        if user == "carol":
            raise RuntimeError("a bug while answering")
        return exists(user)

    router.registry.exists = flaky  # type: ignore[method-assign]
    for n, to in enumerate(["bob", "carol", "dave"], start=1):
        side._pending[n] = Forward(alice, f"m{n}", to, "alice", "AAAA")
    side._expire(1, 3)
    assert [f["id"] for f in frames(out, alice)] == ["m1", "m3"]
    assert side._pending == {}


async def test_a_connection_lost_again_at_once_backs_off_instead_of_spinning(
    redis: RedisServer,
) -> None:
    """The backoff began again from 0.1 s on every connection, however short-lived: a
    subscription dropped right after each connect (Redis's output-buffer limit, say) made the
    instance connect and register everything again ten times a second, for ever."""
    bus = _bus(redis, "A")
    await bus.start()
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 3.0
        while loop.time() < end:  # every subscription dies as soon as it is made
            redis.command("CLIENT", "KILL", "TYPE", "pubsub")
            await asyncio.sleep(0.02)
        assert 2 <= bus.reconnects <= 8  # 0.1, 0.2, 0.4, 0.8, 1.6 s ceilings: a handful
    finally:
        await bus.stop()


async def test_a_kick_nobody_listens_to_does_not_hold_the_login(redis: RedisServer) -> None:
    """The user's old session is on an instance that is still in its time to live but has
    lost its subscription: nobody can answer the kick, so the login goes on at once rather
    than after the kick timeout."""
    clock = Clock()
    rx = cluster_router(clock)
    x = Cluster(rx, redis.url, lambda actions: None)
    await x.start()
    try:
        ghost = _bus(redis, "ghost")  # registered and alive, then its connections go
        await ghost.start()
        await ghost.claim("alice", 1)
        await ghost.stop()  # (killed, say): its heartbeat entry lives on for the instance TTL
        sid, login = _start_login(rx, "alice")
        loop = asyncio.get_running_loop()
        started = loop.time()
        x.carry_out(login)
        await until(lambda: rx.logged_in_session(sid), 2.0, step=0.01)
        assert loop.time() - started < KICK_TIMEOUT / 2
    finally:
        await x.stop()


async def test_a_session_a_newer_login_finds_no_more_is_told_to_close(redis: RedisServer) -> None:
    """The user's session is on Z. A login on X claims and is abandoned; before X gives the
    user back, a login on Y claims: it finds X's dead login and kicks nobody alive. X then
    tells Z's session to close (newest wins), or it would stay logged in, reached by nobody."""
    async with _instances(redis, 3) as (one, two, three):
        rx, x, ry, y = one.router, one.cluster, two.router, two.cluster
        rz, z, to_z = three.router, three.cluster, three.applied
        on_z = claim(rz, "alice")
        await z.bus.claim("alice", on_z)
        on_x, login_x = _start_login(rx, "alice")
        on_y, login_y = _start_login(ry, "alice")
        x.carry_out(login_x)
        await asyncio.sleep(0)  # X's claim is on its way...
        rx.disconnect(on_x)  # ... its socket closes ...
        y.carry_out(login_y)  # ... and Y claims before X can give the user back
        await asyncio.sleep(1.0)
        assert ry.logged_in_session(on_y)
        assert presence(redis, "alice") == f"{y.instance} {on_y}".encode()
        assert [c[0] for c in closes(to_z)] == [on_z]  # told, not left logged in


async def test_an_abandoned_login_gives_the_user_back_to_an_older_login_here_still_claiming(
    redis: RedisServer,
) -> None:
    """An older login on X waits for its kick's answer; a newer one on X claims after it and
    is abandoned before its answer: presence goes back to the older login (which then
    finishes), not to nobody (it would be logged in, reached by no other instance)."""
    async with _instances(redis, 2) as (one, two):
        rx, x, rz, z = one.router, one.cluster, two.router, two.cluster
        await z.bus.claim("alice", claim(rz, "alice"))
        _slow_kicks(z, 0.5)
        older, older_claim = _start_login(rx, "alice")
        x.carry_out(older_claim)
        await asyncio.sleep(0.1)
        newer, newer_claim = _start_login(rx, "alice")
        x.carry_out(newer_claim)
        await asyncio.sleep(0)  # the claim is out...
        rx.disconnect(newer)  # ... and the newer login is abandoned
        await asyncio.sleep(1.0)
        assert rx.logged_in_session(older)
        assert presence(redis, "alice") == f"{x.instance} {older}".encode()


async def test_an_abandoned_login_kicks_nobody_when_no_newer_login_holds_the_user(
    redis: RedisServer,
) -> None:
    """Presence names nobody when the abandoned login gives the user back (its instance was
    swept as dead meanwhile, say): no newer login took the user, so the user's only session
    stays; only a third session in presence means one did."""
    async with _instances(redis, 2) as (one, two):
        rx, x, rz, z, to_z = one.router, one.cluster, two.router, two.cluster, two.applied
        on_z = claim(rz, "alice")
        await z.bus.claim("alice", on_z)
        unclaim = x.bus.unclaim

        async def swept_first(user: str, session: int, old: str | None, kept: str | None) -> int:
            redis.command("HDEL", "voice:presence", "alice")
            return await unclaim(user, session, old, kept)

        x.bus.unclaim = swept_first  # type: ignore[method-assign]
        sid, login = _start_login(rx, "alice")
        x.carry_out(login)
        await asyncio.sleep(0)
        rx.disconnect(sid)
        await asyncio.sleep(0.5)
        assert closes(to_z) == []


async def test_a_kicked_session_s_socket_going_late_leaves_its_levels_of_then(
    redis: RedisServer,
) -> None:
    """O on X is kicked by N on Y; N spends its bucket and leaves; O's socket goes only then.
    O used to leave its levels as of that moment (refilled, dated later than N's), which the
    next login continued: a fresh bucket across instances. O leaves those of its close."""
    async with _instances(redis, 2) as (one, two):
        rx, x, ry, y = one.router, one.cluster, two.router, two.cluster
        clock = cast(Clock, rx._clock)  # the instances' one clock (also their wall clock)
        on_x, login = _start_login(rx, "alice")
        x.carry_out(login)
        await asyncio.sleep(0.3)
        on_y, login = _start_login(ry, "alice")
        y.carry_out(login)
        await asyncio.sleep(0.3)
        assert ry.logged_in_session(on_y) and not rx.logged_in_session(on_x)  # O closing
        for i in range(40):
            for _ in ry.receive(on_y, send("alice", str(i))):
                ry.written(on_y)
        clock.now += 0.01
        left = ry.disconnect(on_y)  # N leaves, its bucket spent
        assert left is not None
        y.left(left)
        await asyncio.sleep(0.2)
        clock.now += 0.01
        late = rx.disconnect(on_x)  # O's socket goes only now
        assert late is not None
        x.left(late)
        await asyncio.sleep(0.2)
        third, login = _start_login(rx, "alice")
        x.carry_out(login)
        await asyncio.sleep(0.3)
        assert rx._sessions[third].bucket.level(clock()) < 2.0
