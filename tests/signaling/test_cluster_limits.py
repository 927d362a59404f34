"""The limits of one server hold for a deployment of two instances on one Redis (issue 15,
item 1): the connections per address count on both, a user's message rate moves with the user
to the instance it logs in to next, and so does its directory allowance; the registration
rates, per address and for the whole server, are counted in the registry they share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from signaling.router import address_group
from signaling.server import serve_signaling
from tests.signaling.cluster_helpers import (
    Instance,
    RedisServer,
    eventually,
    login,
    start_instances,
)
from tests.signaling.helpers import Raw, make_user, server_config
from voice.errors import LoginRefused, RateLimited
from voice.net.client import SignalingClient

pytestmark = pytest.mark.timeout(60)

PER_IP, BURST, LOOKUPS = 4, 10, 3


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[list[Instance]]:
    limits = {"max_connections_per_ip": PER_IP, "rate": 2, "burst": BURST}
    limits |= {"lookup_burst": LOOKUPS, "lookups_per_minute": 1}
    instances = start_instances(tmp_path_factory.mktemp("pair"), redis.url, 2, **limits)
    yield instances
    for instance in instances:
        instance.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[SignalingClient]]:
    made: list[SignalingClient] = []
    yield made
    await asyncio.gather(*(c.close() for c in made))


async def sends_accepted(client: SignalingClient, n: int) -> int:
    accepted = 0
    for _ in range(n):
        try:
            await client.send(client.user, b"x")  # to oneself: costs a token, no directory
            accepted += 1
        except RateLimited:
            pass
    return accepted


async def test_connections_per_address_count_on_every_instance(pair: list[Instance]) -> None:
    opened = [await Raw.open(pair[i % 2].url) for i in range(PER_IP)]  # two on each
    assert all(challenge["type"] == "challenge" for _, challenge in opened)
    for instance in pair:  # one more, on either instance: refused
        extra, answer = await Raw.open(instance.url)
        assert answer["code"] == "too_many_connections"
        assert await extra.closed_code() == 4004
    raw, _ = opened.pop()
    await raw.close()

    async def admitted_again() -> None:  # the closed one's place is free again, anywhere
        again, challenge = await Raw.open(pair[0].url)
        await again.close()
        assert challenge["type"] == "challenge"

    await eventually(admitted_again, 5)
    for raw, _ in opened:
        await raw.close()


async def test_the_message_rate_moves_with_the_user_to_another_instance(
    pair: list[Instance], clients: list[SignalingClient]
) -> None:
    user = make_user("rater", seed=41)
    first = await user.connect(pair[0].url)
    clients.append(first)
    assert await sends_accepted(first, BURST + 2) < BURST  # the burst spent (the login took one)
    second = await user.connect(pair[1].url)  # the newest session wins, on the other instance
    clients.append(second)
    # A fresh session would accept a whole burst; this one continues the spent bucket.
    assert await sends_accepted(second, BURST) <= 3


async def test_the_directory_allowance_moves_with_the_user_to_another_instance(
    pair: list[Instance], redis: RedisServer, clients: list[SignalingClient]
) -> None:
    user = make_user("looker", seed=42)
    first = await user.connect(pair[0].url)
    for i in range(LOOKUPS):
        with pytest.raises(Exception, match="no such user"):
            await first.lookup(f"nobody{i}")
    with pytest.raises(RateLimited):
        await first.lookup("nobodyelse")
    await first.close()

    async def left() -> None:  # the instance kept the allowance in Redis as the session ended
        assert redis.command("EXISTS", "voice:allow:looker").strip() == b"1"

    await eventually(left, 5)
    second = await user.connect(pair[1].url)
    clients.append(second)
    with pytest.raises(RateLimited):  # not a fresh allowance on the other instance
        await second.lookup("nobody0")


async def test_a_login_finished_by_the_cluster_no_longer_counts_as_a_handshake(
    redis: RedisServer, clients: list[SignalingClient]
) -> None:
    # Four handshakes in progress per address at most: logins past that many must have left
    # the handshake table when the cluster finished them, or the next socket is refused.
    config = server_config(redis=redis.url, max_handshakes=4)
    async with serve_signaling(config) as server:
        for i in range(8):
            clients.append(await make_user(f"hand{i}").connect(f"ws://127.0.0.1:{server.port}"))
        assert server.router.logged_in == 8 and server.sockets.in_handshake == 0
        await asyncio.gather(*(c.close() for c in clients))
        clients.clear()


async def test_the_deployments_address_limit_is_the_configured_one_not_one_instances_fit(
    redis: RedisServer, clients: list[SignalingClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # This instance's descriptors fit 78 connections, so its own share from one address is
    # lowered to 78; the count on all the instances together must still allow 100.
    monkeypatch.setattr("signaling.server._open_files_limit", lambda: 200)
    net = address_group("127.0.0.1")
    redis.command("HINCRBY", "voice:conns", net, "90")  # other instances hold 90 from here
    try:
        async with serve_signaling(
            server_config(redis=redis.url, max_connections_per_ip=100)
        ) as server:
            assert server.config.max_connections_per_ip < 90
            clients.append(await make_user("fitted").connect(f"ws://127.0.0.1:{server.port}"))
            assert server.router.logged_in == 1
            await clients.pop().close()
    finally:
        redis.command("HINCRBY", "voice:conns", net, "-90")


@pytest.mark.parametrize(
    ("limits", "refusal"),
    [
        (
            {"registration_ip_burst": 2, "registrations_per_ip_per_hour": 1},
            "too many new usernames from your address",
        ),
        (
            {"registration_burst": 2, "registrations_per_hour": 1},
            "too many new usernames; try later",
        ),
    ],
    ids=["per_address", "server_wide"],
)
async def test_registrations_are_counted_for_the_deployment_not_per_instance(
    tmp_path_factory: pytest.TempPathFactory,
    redis: RedisServer,
    clients: list[SignalingClient],
    limits: dict[str, int],
    refusal: str,
) -> None:
    # Alone, each instance would register two names from 127.0.0.1 (four in all).
    kind = "ip" if "registration_ip_burst" in limits else "all"
    instances = start_instances(tmp_path_factory.mktemp("registrations"), redis.url, 2, **limits)
    try:
        await login(clients, f"new-{kind}-0", instances[0])
        await login(clients, f"new-{kind}-1", instances[1])
        for instance in instances:
            with pytest.raises(LoginRefused) as refused:
                await login(clients, f"new-{kind}-2", instance)
            assert refused.value.code == "registration_limited"
            assert refusal in str(refused.value)
        await clients.pop(0).close()  # a returning user registers nothing: still welcome
        await eventually(lambda: login(clients, f"new-{kind}-0", instances[1]), 5)
    finally:
        for instance in instances:
            instance.stop()
