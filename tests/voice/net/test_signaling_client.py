"""voice.net.client against a real server (and a hostile fake one): typed errors, TURN, close."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from signaling.server import SignalingServer, serve_signaling
from tests.signaling.helpers import make_user, server_config, url_of
from voice.errors import (
    LoginRefused,
    RateLimited,
    SessionReplaced,
    SignalingClosed,
    SignalingProtocolError,
    SignalingUnreachable,
    TurnUnavailable,
)
from voice.net.client import Delivery, SignalingClient


@pytest.fixture
async def server() -> AsyncIterator[SignalingServer]:
    config = server_config(turn_secret="coturn-secret", turn_uris=("turn:127.0.0.1:3478",))
    async with serve_signaling(config) as running:
        yield running


async def test_send_and_receive_with_async_iteration(server: SignalingServer) -> None:
    alice = await make_user("alice").connect(url_of(server))
    bob = await make_user("bob").connect(url_of(server))
    for i in range(3):
        await alice.send("bob", bytes([i]) * 100)
    got: list[Delivery] = []
    async for delivery in bob:
        got.append(delivery)
        if len(got) == 3:
            break
    assert got == [Delivery("alice", bytes([i]) * 100) for i in range(3)]
    await bob.close()
    async for _ in bob:  # after our own close the iterator just ends
        raise AssertionError("no delivery expected")
    await alice.close()


async def test_turn_credentials_are_coturn_rest_credentials(server: SignalingServer) -> None:
    alice = await make_user("alice").connect(url_of(server))
    creds = await alice.turn_credentials()
    expiry, _, user = creds.username.partition(":")
    assert user == "alice" and abs(int(expiry) - (time.time() + creds.ttl)) < 60
    digest = hmac.new(b"coturn-secret", creds.username.encode(), hashlib.sha1).digest()
    assert creds.password == base64.b64encode(digest).decode()
    assert creds.uris == ("turn:127.0.0.1:3478",)
    await alice.close()


async def test_turn_unavailable_without_a_secret() -> None:
    async with serve_signaling(server_config()) as plain:
        alice = await make_user("alice").connect(url_of(plain))
        with pytest.raises(TurnUnavailable):
            await alice.turn_credentials()
        await alice.close()


async def test_rate_limited_is_typed() -> None:
    async with serve_signaling(server_config(rate=1, burst=2)) as srv:
        alice = await make_user("alice").connect(url_of(srv))
        with pytest.raises(RateLimited):
            for _ in range(5):
                await alice.send("alice", b"x")
        await alice.close()


async def test_unreachable_server() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(SignalingUnreachable):
        await make_user("alice").connect(f"ws://127.0.0.1:{port}")


async def test_login_refused_carries_the_code(server: SignalingServer) -> None:
    await (await make_user("alice").connect(url_of(server))).close()
    with pytest.raises(LoginRefused) as refused:
        await make_user("alice").connect(url_of(server))
    assert refused.value.code == "username_taken"
    user = make_user("bob")
    with pytest.raises(LoginRefused) as refused:
        await SignalingClient.connect(url_of(server), "bob", user.pub, lambda m: b"\x00" * 64)
    assert refused.value.code == "bad_signature"


async def test_the_expected_server_name_is_checked(server: SignalingServer) -> None:
    user = make_user("alice")
    with pytest.raises(SignalingProtocolError):
        await SignalingClient.connect(
            url_of(server), "alice", user.pub, user.sign, expected_server="elsewhere"
        )
    client = await SignalingClient.connect(
        url_of(server), "alice", user.pub, user.sign, expected_server=server.name
    )
    assert client.server == server.name
    await client.close()


async def test_replaced_session_and_server_shutdown_end_the_session() -> None:
    async with serve_signaling(server_config()) as srv:
        alice = make_user("alice")
        old = await alice.connect(url_of(srv))
        new = await alice.connect(url_of(srv))
        with pytest.raises(SessionReplaced):
            await old.receive()
        with pytest.raises(SessionReplaced):
            await old.send("alice", b"too late")
    with pytest.raises(SignalingClosed) as closed:  # server gone: 1001 going away
        await asyncio.wait_for(new.receive(), 5)
    assert closed.value.code == 1001
    await old.close()
    await new.close()


async def hostile(
    handler: Callable[[ServerConnection], Awaitable[None]],
) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0) as fake:
        port = next(iter(fake.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


NONCE = base64.b64encode(b"n" * 32).decode()
CHALLENGE = {"v": 1, "type": "challenge", "server": "fake", "nonce": NONCE}


async def test_a_hostile_server_gets_no_further_than_the_parser() -> None:
    async def bad_challenge(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"v": 1, "type": "challenge", "server": "x", "nonce": "AA=="}))
        await ws.wait_closed()

    async def spoofing_deliver(ws: ServerConnection) -> None:
        await ws.send(json.dumps(CHALLENGE))
        login = json.loads(await ws.recv())
        await ws.send(json.dumps({"v": 1, "type": "welcome", "user": login["user"]}))
        await ws.send(json.dumps({"v": 1, "type": "deliver", "from": "../x", "body": "AA=="}))
        await ws.wait_closed()

    user = make_user("alice")
    async for url in hostile(bad_challenge):
        with pytest.raises(SignalingProtocolError):
            await user.connect(url)
    async for url in hostile(spoofing_deliver):
        client = await user.connect(url)
        with pytest.raises(SignalingProtocolError):
            await asyncio.wait_for(client.receive(), 5)
        await client.close()
