"""A deployment of three instances loses one of them, or its Redis (issue 15, item 3).

Each test gets its own redis-server and three ``python -m signaling`` processes. An instance
killed with SIGKILL: its users' phones (given every instance's address) log in to another one
and are reachable again well within 20 s, and the users of the other instances never notice.
A Redis restart: while it is down, envelopes to other instances get an error at once (nothing
hangs) and users on one instance still reach each other; once it is back, every instance
registers its sessions again and routing across instances works as before.

A call in progress does not depend on its signaling instance (media is peer to peer, keys are
end to end): ``tests/integration/test_signaling_loss.py`` shows a connected call going on after
its signaling connection is reset, which is what an instance killed under it does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import User, wait_until
from tests.signaling.cluster_helpers import (
    Instance,
    RedisServer,
    eventually,
    login,
    start_instances,
)
from voice.errors import RecipientOffline
from voice.net.client import SignalingClient
from voice.phone import Phone

pytestmark = pytest.mark.timeout(60)

CALLABLE_WITHIN = 20.0  # issue 15: users of a killed instance are callable again within this


@pytest.fixture
def deployment(tmp_path: Path, redis: RedisServer) -> Iterator[list[Instance]]:
    instances = start_instances(tmp_path, redis.url, 3)
    yield instances
    for instance in instances:
        instance.stop()


async def test_users_of_a_killed_instance_are_reachable_elsewhere_within_20_s(
    deployment: list[Instance], clients: list[SignalingClient], tmp_path: Path
) -> None:
    first, second, third = deployment
    dave = User("dave", tmp_path / "dave")
    urls = (first.url, second.url, third.url)  # what --server URL,URL,URL gives the phone
    config = dave.config(urls[0], fallback_urls=urls[1:], reconnect_delay=0.5)
    phone = await Phone.connect(config, audio=dave.audio)
    try:
        bob = await login(clients, "bob", second)
        carol = await login(clients, "carol", third)
        await bob.send("dave", b"before")
        await wait_until(lambda: phone.deliveries == 1, 5)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        first.kill()
        change = await phone.next_link_change(10)
        assert change.state == "offline"

        async def reachable() -> None:
            await bob.send("dave", b"after")

        await eventually(reachable, CALLABLE_WITHIN)
        took = loop.time() - killed_at
        assert took < CALLABLE_WITHIN, took
        assert phone.online and phone.reconnects == 1
        await wait_until(lambda: phone.deliveries == 2, 5)  # and it got there
        # The other instances' users never noticed.
        await bob.send("carol", b"still here")
        assert (await asyncio.wait_for(carol.receive(), 5)).body == b"still here"
        assert first.proc.returncode is not None and all(i.health() for i in (second, third))
    finally:
        await phone.close()


async def test_after_a_redis_restart_the_instances_register_again_and_route(
    deployment: list[Instance], redis: RedisServer, clients: list[SignalingClient]
) -> None:
    alice = await login(clients, "alice", deployment[0])
    local = await login(clients, "lena", deployment[0])
    bob = await login(clients, "bob", deployment[2])
    await alice.send("bob", b"1")
    assert (await asyncio.wait_for(bob.receive(), 5)).body == b"1"

    redis.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RecipientOffline, match="did not confirm"):  # an error, at once
        await alice.send("bob", b"2")
    assert loop.time() - started < 2.0
    await alice.send("lena", b"same instance")  # sessions on one instance keep working
    assert (await asyncio.wait_for(local.receive(), 5)).body == b"same instance"

    redis.start()  # empty: no presence, no instances, no counters

    async def routes_again() -> None:
        await alice.send("bob", b"3")

    await eventually(routes_again, 10)
    assert (await asyncio.wait_for(bob.receive(), 5)).body == b"3"
    presence = redis.command("HKEYS", "voice:presence").split()
    assert sorted(presence) == [b"alice", b"bob", b"lena"]  # rebuilt from the instances
    await bob.send("alice", b"4")
    assert (await asyncio.wait_for(alice.receive(), 5)).body == b"4"

    async def all_connected() -> None:  # each instance reconnects after its own backoff
        assert all(i.health().get("bus") is True for i in deployment)

    await eventually(all_connected, 10)
    carol = await login(clients, "carol", deployment[1])  # logins work again too
    await carol.send("bob", b"5")
    assert (await asyncio.wait_for(bob.receive(), 5)).body == b"5"
    assert all(i.metric("signaling_bus_reconnects_total") >= 1 for i in deployment)
