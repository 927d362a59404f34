"""The keepalive sweep (signaling.keepalive): its verdicts as pure code, its timer on a real
loop, and a real server that pings only silent connections."""

from __future__ import annotations

import asyncio

from websockets.frames import Opcode

from signaling.keepalive import Keepalive, Liveness, sweep
from signaling.server import serve_signaling
from tests.signaling.helpers import SilentClient, make_user, server_config, url_of
from voice.errors import RequestRefused

INTERVAL, TIMEOUT = 5.0, 10.0


def verdicts(conns: dict[str, Liveness], now: float) -> tuple[list[str], list[str]]:
    return sweep(conns, now, INTERVAL, TIMEOUT)


def test_a_connection_heard_since_the_last_tick_is_neither_pinged_nor_dropped() -> None:
    conns = {"a": Liveness(since=0.0, heard=True, pinged=True)}
    assert verdicts(conns, 100.0) == ([], [])
    assert conns["a"] == Liveness(since=100.0, heard=False, pinged=False)


def test_silence_for_the_interval_pings_once() -> None:
    conns = {"a": Liveness(since=0.0)}
    assert verdicts(conns, 4.9) == ([], [])
    assert verdicts(conns, 5.0) == (["a"], [])
    assert verdicts(conns, 6.0) == ([], [])  # already pinged in this silence
    assert verdicts(conns, 14.9) == ([], [])


def test_silence_past_the_timeout_drops_once_and_forgets() -> None:
    conns = {"a": Liveness(since=0.0), "b": Liveness(since=10.0)}
    assert verdicts(conns, 15.0) == (["b"], ["a"])
    assert "a" not in conns
    assert verdicts(conns, 16.0) == ([], [])


def test_a_pong_after_a_ping_starts_a_new_silence() -> None:
    conns = {"a": Liveness(since=0.0)}
    assert verdicts(conns, 5.0) == (["a"], [])
    conns["a"].heard = True  # the pong
    assert verdicts(conns, 6.0) == ([], [])
    assert verdicts(conns, 10.9) == ([], [])
    assert verdicts(conns, 11.0) == (["a"], [])  # pinged again, 5 s into the new silence
    assert verdicts(conns, 20.9) == ([], [])
    assert verdicts(conns, 21.0) == ([], ["a"])


def test_writes_blocked_past_interval_and_timeout_drop_a_peer_that_still_sends() -> None:
    conns = {"a": Liveness(since=0.0, blocked_since=1.0)}
    for now in (5.0, 10.0, 15.9):
        conns["a"].heard = True  # its own pings, say: it sends, but it does not read
        assert verdicts(conns, now) == ([], [])
    conns["a"].heard = True
    assert verdicts(conns, 16.0) == ([], ["a"])


def test_writes_that_resume_keep_a_slow_reader() -> None:
    conns = {"a": Liveness(since=0.0, blocked_since=1.0)}
    conns["a"].heard = True
    assert verdicts(conns, 15.0) == ([], [])
    conns["a"].blocked_since = None  # it read enough for our writes to resume
    conns["a"].heard = True
    assert verdicts(conns, 16.0) == ([], [])
    conns["a"].blocked_since = 20.0  # blocked again: a new 15 s
    conns["a"].heard = True
    assert verdicts(conns, 34.9) == ([], [])


async def test_a_failing_callback_does_not_stop_the_others_or_the_sweep() -> None:
    dropped: list[str] = []

    def ping(conn: str) -> None:
        raise RuntimeError("a broken connection")

    keepalive: Keepalive[str] = Keepalive(0.2, 0.2, ping, dropped.append)
    keepalive.start()
    try:
        keepalive.watch("a", Liveness(0.0))
        keepalive.watch("b", Liveness(0.0))
        await asyncio.sleep(0.7)
    finally:
        keepalive.stop()
    assert sorted(dropped) == ["a", "b"]  # both pinged (and failed), both dropped later


async def test_the_sweep_ticks_on_the_loop_and_a_forgotten_connection_is_left_alone() -> None:
    pinged: list[str] = []
    dropped: list[str] = []
    keepalive: Keepalive[str] = Keepalive(0.2, 0.2, pinged.append, dropped.append)
    assert keepalive.tick == 0.05
    keepalive.start()
    try:
        silent, chatty, gone = Liveness(0.0), Liveness(0.0), Liveness(0.0)
        keepalive.watch("silent", silent)
        keepalive.watch("chatty", chatty)
        keepalive.watch("gone", gone)
        keepalive.forget("gone")
        for _ in range(14):  # 0.7 s: past interval, timeout and a tick
            chatty.heard = True
            await asyncio.sleep(0.05)
        assert pinged == ["silent"] and dropped == ["silent"]
        assert len(keepalive) == 1  # chatty
    finally:
        keepalive.stop()
    assert len(keepalive) == 0


async def test_a_client_that_pings_on_its_own_is_never_pinged_nor_dropped() -> None:
    """The server's pings were half the keepalive traffic: a client's own pings (any bytes)
    prove it alive, so the server never pings it."""
    config = server_config(ping_interval=0.3, ping_timeout=0.3, login_timeout=30)
    async with serve_signaling(config) as srv:
        client = await SilentClient.open(srv.port)
        await client.login(make_user("chatty"))
        for i in range(20):  # 2 s: more than three times interval + timeout
            client.protocol.send_ping(str(i).encode())
            await client._flush()
            await asyncio.sleep(0.1)
            while len([f for f in client.frames if f.opcode is Opcode.PONG]) <= i:
                await client._read_some()
        opcodes = [f.opcode for f in client.frames]
        assert Opcode.PING not in opcodes
        assert opcodes.count(Opcode.PONG) == 20
        assert srv.router.presence.lookup("chatty") is not None
        client.sock.close()


async def test_a_recipient_that_pings_but_never_reads_is_dropped() -> None:
    """Its own pings would keep it alive for ever; envelopes for it would only ever get
    queue_full while it looked online. Writes blocked past interval + timeout drop it."""
    config = server_config(
        ping_interval=0.3,
        ping_timeout=0.3,
        max_queue=4,
        rate=10_000,
        burst=10_000,
        close_timeout=0.5,
    )
    async with serve_signaling(config) as srv:
        deaf = await SilentClient.open(srv.port)
        await deaf.login(make_user("deaf"))  # then never reads again

        async def ping_on_its_own() -> None:
            for i in range(1_000):
                deaf.protocol.send_ping(str(i).encode())
                await deaf._flush()
                await asyncio.sleep(0.1)

        pinging = asyncio.create_task(ping_on_its_own())
        fast = await make_user("fast").connect(url_of(srv))
        try:
            await asyncio.sleep(1.0)  # three times interval + timeout: kept by its own pings
            assert srv.router.presence.lookup("deaf") is not None
            refused = None
            for _ in range(3000):  # kernel buffers fill first; then the server's queue
                try:
                    await fast.send("deaf", b"\x01" * 30_000)
                except RequestRefused as exc:
                    refused = exc
                    break
            assert refused is not None and refused.code == "queue_full"
            loop = asyncio.get_running_loop()
            full_at = loop.time()
            while srv.router.presence.lookup("deaf") is not None:
                assert loop.time() - full_at < 3.0, "a deaf recipient stayed"
                await asyncio.sleep(0.05)
        finally:
            pinging.cancel()
            deaf.sock.close()
            await fast.close()


async def test_a_client_that_never_answers_pings_leaves_at_most_one_behind() -> None:
    """Heard by its own frames, it is never dropped; each silence got a ping whose pong never
    came, and websockets kept every one of them for the life of the connection."""
    config = server_config(ping_interval=0.2, ping_timeout=2.0, login_timeout=30)
    async with serve_signaling(config) as srv:
        client = await SilentClient.open(srv.port)  # never answers a ping
        await client.login(make_user("mute"))
        (conn,) = srv.keepalive._connections
        for i in range(6):  # silent past the interval, then heard again
            await asyncio.sleep(0.35)
            client.protocol.send_ping(str(i).encode())
            await client._flush()
        await asyncio.sleep(0.1)
        assert srv.router.presence.lookup("mute") is not None  # heard: kept
        assert len(conn.pending_pings) == 1  # the last ping's; pings were sent, none answered
        client.sock.close()
