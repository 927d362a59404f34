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
from signaling.turn import turn_label
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
from voice.net.client import (
    MAX_BUFFERED_BYTES,
    MAX_BUFFERED_DELIVERIES,
    Delivery,
    SignalingClient,
)


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
    expiry, _, label = creds.username.partition(":")
    assert label == turn_label(b"coturn-secret", "alice")  # a pseudonym: STUN sends it clear
    assert abs(int(expiry) - (time.time() + creds.ttl)) < 60
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


async def test_our_abort_never_hides_that_the_session_was_replaced() -> None:
    """The server said "replaced" and we then cut the session (a change of network): iterating
    still raises SessionReplaced, so the phone does not log in again and take the name back."""
    async with serve_signaling(server_config()) as srv:
        alice = make_user("alice")
        old = await alice.connect(url_of(srv))
        new = await alice.connect(url_of(srv))
        for _ in range(50):  # until the server's word has reached the old session
            if old._ended is not None:
                break
            await asyncio.sleep(0.02)
        old.abort()
        with pytest.raises(SessionReplaced):
            async for _delivery in old:
                pass
        await new.close()


async def hostile(
    handler: Callable[[ServerConnection], Awaitable[None]],
) -> AsyncIterator[str]:
    # close_timeout: a fake server that stopped reading never completes a closing handshake;
    # do not wait the default 10 s for it at the end of a test
    async with serve(handler, "127.0.0.1", 0, close_timeout=1.0) as fake:
        port = next(iter(fake.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


NONCE = base64.b64encode(b"n" * 32).decode()
SERVER_ID = "fa4e" * 8
CHALLENGE = {"v": 1, "type": "challenge", "server": "fake", "server_id": SERVER_ID, "nonce": NONCE}


async def test_a_hostile_server_gets_no_further_than_the_parser() -> None:
    async def bad_challenge(ws: ServerConnection) -> None:
        short_nonce = {**CHALLENGE, "nonce": "AA=="}
        await ws.send(json.dumps(short_nonce))
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


def welcome_then(
    after: Callable[[ServerConnection], Awaitable[None]],
) -> Callable[[ServerConnection], Awaitable[None]]:
    """A fake server that logs any client in, then runs ``after``."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps(CHALLENGE))
        login = json.loads(await ws.recv())
        await ws.send(json.dumps({"v": 1, "type": "welcome", "user": login["user"]}))
        await after(ws)

    return handler


def deliver(body: bytes) -> str:
    encoded = base64.b64encode(body).decode()
    return json.dumps({"v": 1, "type": "deliver", "from": "mallory", "body": encoded})


async def drain(client: SignalingClient, *, dropped: int) -> list[Delivery]:
    """Wait (without receiving) until ``dropped`` deliveries were dropped, then receive all."""
    async with asyncio.timeout(20):
        while client.dropped_deliveries < dropped:  # noqa: ASYNC110 - the reader counts
            await asyncio.sleep(0.01)
    got: list[Delivery] = []
    with pytest.raises(SignalingClosed):
        while True:
            got.append(await asyncio.wait_for(client.receive(), 10))
    return got


async def test_a_flooding_server_cannot_grow_the_delivery_buffer_without_bound() -> None:
    """Deliveries nobody has received yet are capped (count and bytes): past the cap the
    newest are dropped and counted, the oldest stay in order, the session goes on."""
    sent = MAX_BUFFERED_DELIVERIES + 500

    async def flood(ws: ServerConnection) -> None:
        for i in range(sent):
            await ws.send(deliver(i.to_bytes(4, "big")))
        await ws.close()

    async for url in hostile(welcome_then(flood)):
        client = await make_user("alice").connect(url)
        got = await drain(client, dropped=sent - MAX_BUFFERED_DELIVERIES)
        assert [d.body for d in got] == [i.to_bytes(4, "big") for i in range(len(got))]
        assert len(got) == MAX_BUFFERED_DELIVERIES  # the oldest, in order
        assert client.dropped_deliveries == sent - len(got)
        await client.close()


async def test_big_deliveries_are_capped_by_bytes_too() -> None:
    body = b"\x05" * 180_000  # a frame just under the client's 256 KiB frame limit
    sent = 2 * MAX_BUFFERED_BYTES // len(body)

    async def flood(ws: ServerConnection) -> None:
        for _ in range(sent):
            await ws.send(deliver(body))
        await ws.close()

    async for url in hostile(welcome_then(flood)):
        client = await make_user("alice").connect(url)
        fits = MAX_BUFFERED_BYTES // len(body)
        got = await drain(client, dropped=sent - fits)
        assert len(got) == fits and sum(len(d.body) for d in got) <= MAX_BUFFERED_BYTES
        assert client.dropped_deliveries == sent - len(got)
        await client.close()


async def test_a_server_that_stops_reading_cannot_hang_send_past_its_timeout() -> None:
    """``send`` used to write outside its timeout: once the socket buffers were full it hung
    until the keepalive gave up (40 s by default), whatever ``reply_timeout`` said."""
    stop = asyncio.Event()

    async def deaf(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # never reads again, never answers
        await stop.wait()

    async for url in hostile(welcome_then(deaf)):
        client = await make_user("alice").connect(url)
        body = b"\x00" * 500_000
        async with asyncio.timeout(60) as guard:
            for _ in range(60):  # several MB: far past the kernel's socket buffers
                with pytest.raises(TimeoutError):
                    await client.send("bob", body, reply_timeout=0.1)
        assert not guard.expired()
        stop.set()
        await client.close()
