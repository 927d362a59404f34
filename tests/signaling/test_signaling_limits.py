"""Every limit, against a real server: past it, a clear error or close code for that connection
only, while the server and every other connection keep working."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from websockets.frames import Close, Frame, Opcode

from signaling.server import SignalingServer, serve_signaling
from tests.signaling.helpers import Raw, SilentClient, make_user, server_config, url_of
from voice.errors import LoginRefused, RecipientOffline, RequestRefused
from voice.net.client import SignalingClient


async def still_routing(server: SignalingServer) -> None:
    """Two fresh users can still log in and exchange an envelope both ways."""
    ann = await make_user("ann").connect(url_of(server))
    ben = await make_user("ben").connect(url_of(server))
    await ann.send("ben", b"ping")
    await ben.send("ann", b"pong")
    assert (await asyncio.wait_for(ben.receive(), 5)).body == b"ping"
    assert (await asyncio.wait_for(ann.receive(), 5)).body == b"pong"
    await asyncio.gather(ann.close(), ben.close())


async def eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the state lives in the server; poll it
            await asyncio.sleep(0.01)


def send_frame(msg_id: str, to: str, body: bytes) -> dict[str, Any]:
    encoded = base64.b64encode(body).decode()
    return {"v": 1, "type": "send", "id": msg_id, "to": to, "body": encoded}


async def test_max_frame_size() -> None:
    async with serve_signaling(server_config(max_frame_bytes=2048, max_body_bytes=1024)) as srv:
        bystander = await make_user("carl").connect(url_of(srv))
        raw, challenge = await Raw.open(url_of(srv))
        await raw.login(make_user("dora"), challenge)
        await raw.send(send_frame("b", "carl", b"x" * 1025))  # fits the frame, not the body
        assert (await raw.recv())["code"] == "body_too_large"
        await raw.send(send_frame("ok", "carl", b"x" * 1024))
        assert (await raw.recv())["type"] == "sent"
        await raw.send(send_frame("big", "carl", b"x" * 3000))
        error = await raw.recv()
        assert (error["type"], error["code"]) == ("error", "too_large")
        assert await raw.closed_code() == 1009
        assert (await bystander.receive()).body == b"x" * 1024
        await still_routing(srv)
        await bystander.close()


async def test_malformed_transport_frames_get_an_error_too() -> None:
    async with serve_signaling(server_config()) as srv:
        raw, _ = await Raw.open(url_of(srv))
        await raw.send(b"\x00binary")
        assert (await raw.recv())["code"] == "bad_frame"  # the connection stays open
        await raw.send("not json")
        assert (await raw.recv())["code"] == "bad_json"
        await raw.ws.send(b"\xff\xfe invalid utf-8", text=True)
        assert (await raw.recv())["code"] == "bad_frame"
        assert await raw.closed_code() == 1007
        await still_routing(srv)


async def test_outbound_queue_per_connection() -> None:
    config = server_config(max_queue=4, rate=10_000, burst=10_000, close_timeout=0.5)
    async with serve_signaling(config) as srv:
        slow = await SilentClient.open(srv.port)
        await slow.login(make_user("slow"))  # then never reads again
        fast = await make_user("fast").connect(url_of(srv))
        body = b"\x01" * 30_000
        refused = None
        for _ in range(3000):  # kernel buffers fill first; then the server's queue
            try:
                await fast.send("slow", body)
            except RequestRefused as exc:
                refused = exc
                break
        assert refused is not None and refused.code == "queue_full"
        # The envelope was dropped; the recipient is not closed for what others sent it (a dead
        # or deaf one is dropped by the keepalive: test_idle_ping_pong, tests/.../test_keepalive).
        assert srv.router.presence.lookup("slow") is not None
        with pytest.raises(RequestRefused) as again:
            await fast.send("slow", b"again")
        assert again.value.code == "queue_full"
        await still_routing(srv)
        slow.close()  # the writer blocked on it is released and the session forgotten
        await eventually(lambda: srv.router.presence.lookup("slow") is None)
        await eventually(lambda: srv.router.connections == 1)
        with pytest.raises(RecipientOffline):
            await fast.send("slow", b"gone")
        await fast.close()


async def test_a_burst_of_envelopes_cannot_disconnect_a_healthy_recipient() -> None:
    """Default limits: burst 40 > max_queue 32. Frames that arrive in one TCP segment used to be
    routed without letting any writer run, so 33 tiny envelopes closed the recipient (and the
    sender) with queue_full: any user could end anyone's calls."""
    async with serve_signaling(server_config()) as srv:
        bob = await make_user("bob").connect(url_of(srv))
        raw, challenge = await Raw.open(url_of(srv))
        await raw.login(make_user("mallory"), challenge)
        count = 38  # within the default burst (the login took one token)
        protocol = raw.ws.protocol
        for i in range(count):
            protocol.send_text(json.dumps(send_frame(str(i), "bob", b"x" * 10)).encode())
        raw.ws.transport.write(b"".join(protocol.data_to_send()))  # one write, one segment
        replies = [await asyncio.wait_for(raw.recv(), 5) for _ in range(count)]
        assert [r["type"] for r in replies] == ["sent"] * count
        got = [await asyncio.wait_for(bob.receive(), 5) for _ in range(count)]
        assert all(d.from_user == "mallory" for d in got)
        assert srv.router.presence.lookup("bob") is not None
        await bob.send("bob", b"still here")
        assert (await asyncio.wait_for(bob.receive(), 5)).body == b"still here"
        await asyncio.gather(raw.close(), bob.close())


async def test_messages_per_second_per_user() -> None:
    async with serve_signaling(server_config(rate=2, burst=3)) as srv:
        sink = await make_user("sink").connect(url_of(srv))
        raw, challenge = await Raw.open(url_of(srv))
        await raw.login(make_user("chatty"), challenge)
        for i in range(10):
            await raw.send(send_frame(str(i), "sink", b"hi"))
        replies = [await raw.recv() for _ in range(10)]
        sent = [r for r in replies if r["type"] == "sent"]
        limited = [r for r in replies if r.get("code") == "rate_limited"]
        assert len(sent) + len(limited) == 10
        assert 2 <= len(sent) <= 4 and len(limited) >= 6  # burst 3, the login took one
        assert {r["id"] for r in limited} <= {str(i) for i in range(10)}
        await asyncio.sleep(1.0)  # two tokens come back
        await raw.send(send_frame("later", "sink", b"hi"))
        assert await raw.recv() == {"v": 1, "type": "sent", "id": "later"}
        await still_routing(srv)
        await asyncio.gather(raw.close(), sink.close())


async def test_login_deadline() -> None:
    async with serve_signaling(server_config(login_timeout=0.3)) as srv:
        raw, _ = await Raw.open(url_of(srv))
        error = await asyncio.wait_for(raw.recv(), 5)
        assert (error["type"], error["code"]) == ("error", "login_timeout")
        assert await raw.closed_code() == 4002
        await still_routing(srv)  # logging in in time still works


async def test_idle_ping_pong() -> None:
    config = server_config(ping_interval=0.2, ping_timeout=0.2, login_timeout=30)
    async with serve_signaling(config) as srv:
        alive = await make_user("alive").connect(url_of(srv))  # answers pings (websockets)
        silent = await SilentClient.open(srv.port)
        await silent.login(make_user("silent"))
        frames = await asyncio.wait_for(silent.read_until_eof(), 10)
        pings = [f for f in frames if f.opcode is Opcode.PING]
        close = [Close.parse(bytes(f.data)) for f in frames if f.opcode is Opcode.CLOSE]
        assert pings and close and close[0].code == 1011  # keepalive ping timeout
        silent.close()
        await eventually(lambda: srv.router.presence.lookup("silent") is None)
        await asyncio.sleep(1.0)  # several ping rounds: the live client is kept
        await alive.send("alive", b"still here")
        assert (await asyncio.wait_for(alive.receive(), 5)).body == b"still here"
        await still_routing(srv)
        await alive.close()


async def test_connections_per_ip() -> None:
    async with serve_signaling(server_config(max_connections_per_ip=2)) as srv:
        first = await make_user("first").connect(url_of(srv))
        second, _ = await Raw.open(url_of(srv))
        third, error = await Raw.open(url_of(srv))
        assert (error["type"], error["code"]) == ("error", "too_many_connections")
        assert await third.closed_code() == 4004
        await first.send("first", b"loop")
        assert (await first.receive()).body == b"loop"
        await second.close()
        again = await make_user("again").connect(url_of(srv))
        await again.send("first", b"room again")
        assert (await first.receive()).body == b"room again"
        await asyncio.gather(first.close(), again.close())


async def test_a_refused_connection_never_gets_a_challenge() -> None:
    async with serve_signaling(server_config(max_connections=1)) as srv:
        holder = await make_user("holder").connect(url_of(srv))
        raw, first = await Raw.open(url_of(srv))
        assert first["code"] == "too_many_connections"
        assert await raw.closed_code() == 4004
        with pytest.raises(LoginRefused) as info:
            await SignalingClient.connect(url_of(srv), "other", b"\x00" * 32, lambda m: m)
        assert info.value.code == "too_many_connections"
        await holder.close()


async def test_the_per_ip_limit_also_counts_connections_still_in_their_handshake() -> None:
    """The per-IP count started only once a WebSocket handshake completed, so one address
    could hold any number of sockets (file descriptors) that never finish it. Past twice the
    limit, sockets from that address are now dropped as soon as they are accepted."""
    config = server_config(max_connections_per_ip=2, login_timeout=30)
    async with serve_signaling(config) as srv:
        loop = asyncio.get_running_loop()
        socks = []
        for _ in range(8):  # TCP only: never send the HTTP upgrade
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", srv.port))
            socks.append(sock)

        async def dropped(sock: socket.socket) -> bool:
            try:
                async with asyncio.timeout(0.5):
                    return await loop.sock_recv(sock, 1) == b""
            except TimeoutError:
                return False  # still open, still waiting for its handshake
            except ConnectionResetError:
                return True

        states = [await dropped(s) for s in socks]
        assert states == [False] * 4 + [True] * 4
        for sock in socks:
            sock.close()
        await eventually(lambda: srv.router.connections == 0)
        await still_routing(srv)  # the count came back down: the address may connect again
        raw, challenge = await Raw.open(url_of(srv))
        assert challenge["type"] == "challenge"
        await raw.close()


async def test_a_peer_that_sends_pings_and_never_reads_is_dropped() -> None:
    """Before any login: every ping is answered whether the peer reads or not, so a peer that
    never reads grew the server's write buffer without bound (hundreds of MB in seconds).
    It is dropped once that buffer passes WRITE_BUFFER_CAP; the server serves the others."""
    config = server_config(login_timeout=60, ping_interval=60)
    async with serve_signaling(config) as srv:
        raw, _challenge = await Raw.open(url_of(srv))
        sock = raw.ws.transport.get_extra_info("socket")
        raw.ws.transport.pause_reading()  # never read again
        ping = Frame(Opcode.PING, b"x" * 125).serialize(mask=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        dropped = False
        while loop.time() < deadline and not dropped:
            try:
                raw.ws.transport.write(ping * 500)
                await asyncio.sleep(0)
            except (ConnectionError, RuntimeError):
                dropped = True
            if raw.ws.transport.is_closing() or sock.fileno() < 0:
                dropped = True
        assert dropped, "the server kept answering pings that were never read"
        await still_routing(srv)
