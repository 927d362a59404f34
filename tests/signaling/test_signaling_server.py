"""A real server on port 0 and real websockets clients: login, routing, spoofing, operations."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.httpd import MAX_PER_ADDRESS
from signaling.logs import JsonLineFormatter
from signaling.registry_open import open_registry
from signaling.server import SignalingServer, serve_signaling
from tests.signaling.helpers import Raw, SilentClient, make_user, server_config, url_of
from voice.errors import (
    LoginRefused,
    RecipientOffline,
    RequestRefused,
    SessionReplaced,
    UnknownUser,
)


@pytest.fixture
async def server() -> AsyncIterator[SignalingServer]:
    async with serve_signaling(server_config()) as running:
        yield running


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = (await reader.read()).decode()
    writer.close()
    head, _, body = data.partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_login_succeeds(server: SignalingServer) -> None:
    raw, challenge = await Raw.open(url_of(server))
    assert challenge["type"] == "challenge" and challenge["server"] == server.name
    assert len(base64.b64decode(challenge["nonce"])) == 32
    assert await raw.login(make_user("alice"), challenge) == {
        "v": 1,
        "type": "welcome",
        "user": "alice",
    }
    assert server.router.logged_in == 1
    await raw.close()


async def test_wrong_signature_is_refused(server: SignalingServer) -> None:
    raw, challenge = await Raw.open(url_of(server))
    alice, mallory = make_user("alice"), make_user("alice")
    frame = json.loads(mallory.login_frame(challenge))
    frame["key"] = base64.b64encode(alice.pub).decode()  # claims alice's key, signs with another
    await raw.send(frame)
    assert (await raw.recv())["code"] == "bad_signature"
    assert await raw.closed_code() == 4001
    assert server.router.logged_in == 0


async def test_a_replayed_login_is_refused(server: SignalingServer) -> None:
    alice = make_user("alice")
    first, challenge = await Raw.open(url_of(server))
    captured = alice.login_frame(challenge)
    await first.send(captured)
    assert (await first.recv())["type"] == "welcome"
    # an eavesdropper replays the captured login on its own connection (another nonce)
    second, _ = await Raw.open(url_of(server))
    await second.send(captured)
    assert (await second.recv())["code"] == "bad_signature"
    assert await second.closed_code() == 4001
    # and on the same connection a second login is refused, the session stays up
    await first.send(captured)
    assert (await first.recv())["code"] == "already_logged_in"
    await first.send({"v": 1, "type": "send", "id": "1", "to": "alice", "body": "AA=="})
    replies = [await first.recv(), await first.recv()]
    assert sorted(r["type"] for r in replies) == ["deliver", "sent"]


async def test_a_username_owned_by_another_key_is_refused_across_restarts(
    tmp_path: Path,
) -> None:
    config = server_config(db=str(tmp_path / "registry.sqlite3"))
    alice, impostor = make_user("alice"), make_user("alice")
    async with serve_signaling(config) as server:
        await (await alice.connect(url_of(server))).close()
        with pytest.raises(LoginRefused) as refused:
            await impostor.connect(url_of(server))
        assert refused.value.code == "username_taken"
    async with serve_signaling(config) as server:
        with pytest.raises(LoginRefused) as refused:
            await impostor.connect(url_of(server))
        assert refused.value.code == "username_taken"
        client = await alice.connect(url_of(server))
        assert client.user == "alice"
        await client.close()


@pytest.mark.parametrize("name", ["Alice", "al", "1alice", "a" * 33, "al ice"])
async def test_username_rules_are_enforced(server: SignalingServer, name: str) -> None:
    raw, challenge = await Raw.open(url_of(server))
    await raw.send(make_user("x").login_frame(challenge, user=name))
    assert (await raw.recv())["code"] == "bad_username"
    assert await raw.closed_code() == 4001


async def test_from_cannot_be_spoofed(server: SignalingServer) -> None:
    bob = await make_user("bob").connect(url_of(server))
    await (await make_user("alice").connect(url_of(server))).close()
    mallory, challenge = await Raw.open(url_of(server))
    await mallory.login(make_user("mallory"), challenge)
    body = base64.b64encode(b"call me").decode()
    spoofed = {"v": 1, "type": "send", "id": "s", "to": "bob", "body": body, "from": "alice"}
    await mallory.send(spoofed)
    assert await mallory.recv() == {
        "v": 1,
        "type": "error",
        "code": "extra_field",
        "message": "unexpected field 'from'",
        "id": "s",
    }
    del spoofed["from"]
    await mallory.send(spoofed)
    assert (await mallory.recv())["type"] == "sent"
    delivery = await asyncio.wait_for(bob.receive(), 5)
    assert (delivery.from_user, delivery.body) == ("mallory", b"call me")  # never "alice"
    await bob.close()


async def test_routing_and_the_offline_recipient_error(server: SignalingServer) -> None:
    alice = await make_user("alice").connect(url_of(server))
    bob = await make_user("bob").connect(url_of(server))
    for i in range(20):
        await alice.send("bob", f"envelope {i}".encode())
        await bob.send("alice", f"reply {i}".encode())
    got_bob = [(await bob.receive()).body for _ in range(20)]
    got_alice = [(await alice.receive()).body for _ in range(20)]
    assert got_bob == [f"envelope {i}".encode() for i in range(20)]
    assert got_alice == [f"reply {i}".encode() for i in range(20)]
    await bob.close()
    with pytest.raises(RecipientOffline):
        await alice.send("bob", b"are you there?")
    with pytest.raises(UnknownUser):
        await alice.send("nobody", b"hello")
    with pytest.raises(RequestRefused) as refused:
        await alice.send("Not A Name", b"hello")
    assert refused.value.code == "bad_username"
    await alice.close()


async def test_logging_in_twice_the_newest_session_wins(server: SignalingServer) -> None:
    alice = make_user("alice")
    old = await alice.connect(url_of(server))
    new = await alice.connect(url_of(server))
    with pytest.raises(SessionReplaced) as replaced:
        await asyncio.wait_for(old.receive(), 5)
    assert replaced.value.code == "replaced"
    bob = await make_user("bob").connect(url_of(server))
    await bob.send("alice", b"to the newest")
    assert (await asyncio.wait_for(new.receive(), 5)).body == b"to the newest"
    assert server.router.logged_in == 2
    await asyncio.gather(old.close(), new.close(), bob.close())


async def test_metrics_and_health(server: SignalingServer) -> None:
    alice = await make_user("alice").connect(url_of(server))
    bob = await make_user("bob").connect(url_of(server))
    await alice.send("bob", b"x")
    with pytest.raises(UnknownUser):
        await alice.send("carol", b"x")
    status, body = await http_get(server.http_port, "/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok", "connections": 2, "logged_in": 2}
    status, text = await http_get(server.http_port, "/metrics")
    assert status == 200
    assert "signaling_connections 2.0" in text
    assert "signaling_logged_in_users 2.0" in text
    assert "signaling_envelopes_routed_total 1.0" in text
    assert 'signaling_errors_total{code="unknown_user"} 1.0' in text
    assert (await http_get(server.http_port, "/nope"))[0] == 404
    # a second server in the same process has its own registry
    async with serve_signaling(server_config()) as other:
        _, other_text = await http_get(other.http_port, "/metrics")
        assert "signaling_envelopes_routed_total 0.0" in other_text
    await asyncio.gather(alice.close(), bob.close())


async def test_one_address_holding_idle_ops_sockets_does_not_keep_health_checks_out(
    server: SignalingServer,
) -> None:
    """64 idle sockets from one address, reopened as they timed out, used to keep every
    /healthz and /metrics request out (a container marked unhealthy). One address now holds
    at most MAX_PER_ADDRESS; others are answered meanwhile, and so is it once one is free."""
    held = [await asyncio.open_connection("127.0.0.1", server.http_port) for _ in range(64)]
    try:
        await asyncio.sleep(0.1)  # the server took them all (and closed those past the cap)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.http_port, local_addr=("127.0.0.2", 0)
        )
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 1.0)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK")
        refused = 0
        for held_reader, _ in held:  # the ones past the cap were closed at once
            with contextlib.suppress(ConnectionError, TimeoutError):  # (those held: no EOF)
                refused += await asyncio.wait_for(held_reader.read(), 0.05) == b""
        assert refused == 64 - MAX_PER_ADDRESS
    finally:
        for _, held_writer in held:
            held_writer.close()


async def test_logs_never_contain_bodies_or_keys(server: SignalingServer) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        secret = b"SECRET-ENVELOPE-CONTENT-4242"
        alice_user = make_user("alice")
        alice = await alice_user.connect(url_of(server))
        bob = await make_user("bob").connect(url_of(server))
        await alice.send("bob", secret)
        await bob.receive()
        raw, challenge = await Raw.open(url_of(server))
        await raw.send(make_user("alice").login_frame(challenge))  # a refused login is logged
        await raw.recv()
        await asyncio.gather(alice.close(), bob.close(), raw.close())
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = stream.getvalue()
    assert '"event": "login"' in logged and "login_refused" in logged
    for forbidden in (secret, base64.b64encode(secret), base64.b64encode(alice_user.pub)):
        assert forbidden.decode() not in logged
    for line in logged.splitlines():
        json.loads(line)


async def test_stopping_does_not_wait_for_ever_on_a_peer_that_never_reads() -> None:
    """Closing sends a close frame and waits for it to drain: a peer that never reads never
    lets it. The server aborts such sockets once the close timeout (and a grace) is over."""
    config = server_config(close_timeout=0.5, max_queue=4, rate=10_000, burst=10_000)
    server = SignalingServer(config, open_registry(":memory:"))
    await server.start()
    deaf = await SilentClient.open(server.port)
    await deaf.login(make_user("deaf"))  # then never reads again
    fast = await make_user("fast").connect(url_of(server))
    try:
        with contextlib.suppress(RequestRefused):
            for _ in range(3000):  # until its buffers and queue are full
                await fast.send("deaf", b"\x01" * 30_000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(server.stop(), 10)
        assert loop.time() - started < 0.5 + 1.0 + 1.0  # close timeout, grace, slack
    finally:
        deaf.sock.close()
        await fast.close()
