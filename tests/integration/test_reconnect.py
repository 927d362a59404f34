"""A phone that stays online: it logs in again by itself after the signaling session is lost.

Real servers (a restart is a new server on the same port and registry file), real phones with
tone sources and real media on loopback. Covered: two idle phones come back after a server
restart and call each other; a silent link (a proxy that black-holes the traffic) is noticed by
the keepalive within 15 s and the phone comes back once the network does; a change of this
machine's addresses logs in again at once (in a call, which restarts ICE, and idle); a phone
that comes back before the server noticed its old connection died takes over its name at once; a
connected call outlives a restart and its hangup, sent while offline, is delivered once back;
fatal errors end the phone instead of retrying; missed calls are recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from signaling.server import SignalingServer, serve_signaling
from tests.integration.conftest import WAIT, MakeUser, User, server_config, url_of, wait_until
from tests.integration.link_proxy import LinkProxy
from voice.call.events import EndReason, FailReason, State
from voice.errors import SessionReplaced
from voice.net.client import CLOSE_TIMEOUT
from voice.phone import Call, Phone

pytestmark = pytest.mark.timeout(120)

BACK_WITHIN = 20.0  # a restarted server: both phones are reachable again within this


class Restartable:
    """A signaling server that can be stopped and started again on the same port and file."""

    def __init__(self, tmp_path: Path, **changes: Any) -> None:
        self.config = server_config(db=str(tmp_path / "registry.sqlite3"), **changes)
        self.server: SignalingServer | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def start(self) -> SignalingServer:
        self._stack = contextlib.AsyncExitStack()
        self.server = await self._stack.enter_async_context(serve_signaling(self.config))
        self.config = self.config.replace(port=self.server.port)
        return self.server

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}"


@pytest.fixture
async def restartable(tmp_path: Path) -> AsyncIterator[Restartable]:
    server = Restartable(tmp_path)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def phones() -> AsyncIterator[list[Phone]]:
    made: list[Phone] = []
    yield made
    await asyncio.wait_for(asyncio.gather(*(p.close() for p in made)), WAIT)


async def connect(made: list[Phone], user: User, url: str, **changes: Any) -> Phone:
    phone = await Phone.connect(user.config(url, **changes), audio=user.audio)
    made.append(phone)
    return phone


async def call_connects(caller: Phone, callee: Phone) -> tuple[Call, Call]:
    """``caller`` dials, ``callee`` answers, and audio flows both ways."""
    out = await caller.call(callee.user)
    inc = await callee.incoming(timeout=WAIT)
    await inc.accept()
    await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
    await audio_keeps_flowing(out, inc)
    assert out.sas is not None and out.sas == inc.sas
    return out, inc


def audio_in(call: Call) -> int:
    stats = call.media_stats()
    return 0 if stats is None else stats.rtp_packets_received


async def audio_keeps_flowing(*calls: Call, frames: int = 50) -> None:
    start = {id(c): audio_in(c) for c in calls}
    await wait_until(lambda: all(audio_in(c) >= start[id(c)] + frames for c in calls))


async def test_idle_phones_come_back_after_a_server_restart_and_call(
    restartable: Restartable, make_user: MakeUser, phones: list[Phone]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    pa = await connect(phones, alice, restartable.url)
    pb = await connect(phones, bob, restartable.url)
    assert pa.online and pb.online
    await restartable.stop()
    for phone in (pa, pb):
        change = await phone.next_link_change(WAIT)
        assert change.state == "offline" and "shutting down" in change.reason
        assert not phone.online and phone.signaling_lost is None  # reconnecting, not lost
    await asyncio.sleep(1.0)  # a few failed attempts while the server is down
    loop = asyncio.get_running_loop()
    restarted_at = loop.time()
    server = await restartable.start()
    await asyncio.gather(pa.wait_online(BACK_WITHIN), pb.wait_online(BACK_WITHIN))
    assert loop.time() - restarted_at < BACK_WITHIN
    for phone in (pa, pb):
        change = await phone.next_link_change(WAIT)
        assert change.state == "online" and phone.reconnects == 1
        assert [c.state for c in phone.link_changes] == ["offline", "online"]
        assert server.router.presence.lookup(phone.user) is not None  # reachable
    await call_connects(pa, pb)
    assert alice.sinks[-1].frames and bob.sinks[-1].frames  # real audio both ways


def test_the_default_keepalive_notices_a_silent_server_within_15_s(make_user: MakeUser) -> None:
    """What the README promises: a ping every keepalive_interval, a pong awaited for
    keepalive_timeout, then the closing handshake; the test below runs the same code faster."""
    config = make_user("alice").config("ws://127.0.0.1:1")
    assert config.keepalive_interval + config.keepalive_timeout + CLOSE_TIMEOUT <= 15.0


async def test_a_silent_link_is_noticed_by_keepalive_and_the_phone_comes_back(
    server: SignalingServer, make_user: MakeUser, phones: list[Phone]
) -> None:
    proxy = await LinkProxy(server.port).start()
    try:
        # a short keepalive (the default's 5 s + 9 s: test_the_default_keepalive_...), and
        # short login attempts so one stuck in the black hole ends soon
        pa = await connect(phones, make_user("alice"), proxy.url, request_timeout=3.0,
                           reconnect_max_delay=2.0, keepalive_interval=1.0,
                           keepalive_timeout=2.0)  # fmt: skip
        pb = await connect(phones, make_user("bob"), url_of(server))
        loop = asyncio.get_running_loop()
        proxy.stall()  # nothing gets through any more, and nothing is closed
        stalled_at = loop.time()
        change = await pa.next_link_change(WAIT)
        noticed = loop.time() - stalled_at
        assert change.state == "offline" and "keepalive" in change.reason, change
        assert noticed <= 1.0 + 2.0 + CLOSE_TIMEOUT + 1.0, noticed  # interval + timeout + close
        # (plus scheduling slack)
        assert not pa.online
        await asyncio.sleep(1.0)
        assert not pa.online  # attempts go into the black hole: still offline
        proxy.resume()
        await pa.wait_online(WAIT)
        assert (await pa.next_link_change(WAIT)).state == "online"
        await call_connects(pb, pa)  # alice is reachable again
    finally:
        await proxy.close()


async def test_a_change_of_address_logs_in_again_at_once_in_a_call_and_idle(
    server: SignalingServer, make_user: MakeUser, phones: list[Phone]
) -> None:
    """Wi-Fi to LTE: the phone's address watch sees it within a second and the phone cuts its
    session and logs in again at once (keepalive would take up to 14 s to find a dead one), in
    a call (which goes on: here its path, on loopback, was not hit) and idle, to stay reachable.
    The call's ICE restart and the real network: tests/integration/test_real_network.py."""
    addresses = {"192.168.1.20"}  # the fake interfaces alice's phone watches
    pa = await connect(phones, make_user("alice"), url_of(server), addresses=lambda: addresses)
    pb = await connect(phones, make_user("bob"), url_of(server))
    loop = asyncio.get_running_loop()
    out, inc = await call_connects(pa, pb)
    for moved in ({"10.64.0.7"}, {"192.168.1.21"}):  # in a call, then idle
        session = server.router.presence.lookup("alice")
        addresses, moved_at = moved, loop.time()
        change = await pa.next_link_change(WAIT)
        assert (change.state, change.reason) == ("offline", "the network changed")
        assert (await pa.next_link_change(WAIT)).state == "online"
        assert loop.time() - moved_at < 3.0  # a 1 s poll and a login, no keepalive, no backoff
        assert server.router.presence.lookup("alice") not in (None, session)
        if out.state is State.CONNECTED:
            await audio_keeps_flowing(out, inc)
            assert out.state is inc.state is State.CONNECTED  # the call went on
            await out.hangup()
            assert (await inc.wait_ended(WAIT)).reason is EndReason.HANGUP_REMOTE
    assert pa.reconnects == 2 and pb.link_changes == []  # bob's addresses did not change
    await call_connects(pb, pa)  # alice is reachable on her new session


async def test_a_phone_back_before_the_server_noticed_its_dead_link_is_reachable(
    server: SignalingServer, make_user: MakeUser, phones: list[Phone]
) -> None:
    """The server's keepalive (5 s + 10 s) has not dropped alice's dead connection yet when
    she logs in again: the new login replaces the old session, and bob reaches her."""
    proxy = await LinkProxy(server.port).start()
    try:
        pa = await connect(phones, make_user("alice"), proxy.url, keepalive_interval=0.3,
                           keepalive_timeout=0.6, request_timeout=2.0)  # fmt: skip
        pb = await connect(phones, make_user("bob"), url_of(server))
        old_session = server.router.presence.lookup("alice")
        loop = asyncio.get_running_loop()
        proxy.stall()
        stalled_at = loop.time()
        assert (await pa.next_link_change(WAIT)).state == "offline"
        proxy.resume()
        await pa.wait_online(WAIT)
        new_session = server.router.presence.lookup("alice")
        assert new_session is not None and new_session != old_session
        assert loop.time() - stalled_at < 10.0  # before the server's own keepalive gave up
        await call_connects(pb, pa)
    finally:
        await proxy.close()


async def test_a_connected_call_survives_a_restart_and_its_hangup_is_delivered(
    restartable: Restartable, make_user: MakeUser, phones: list[Phone]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    pa = await connect(phones, alice, restartable.url, rtcp_bye=False)  # the envelope alone
    pb = await connect(phones, bob, restartable.url, media_timeout=30.0)
    out, inc = await call_connects(pa, pb)
    await restartable.stop()
    for phone in (pa, pb):
        assert (await phone.next_link_change(WAIT)).state == "offline"
    await audio_keeps_flowing(out, inc)  # peer to peer: no server needed
    assert out.state is State.CONNECTED and inc.state is State.CONNECTED
    # alice hangs up while offline: it ends on her side at once, the hangup waits for the link
    await out.hangup()
    assert (await out.wait_ended(WAIT)).reason is EndReason.HANGUP_LOCAL
    await restartable.start()
    outcome = await inc.wait_ended(WAIT)
    assert outcome.reason is EndReason.HANGUP_REMOTE, outcome  # delivered, not a media timeout
    await asyncio.gather(pa.wait_online(WAIT), pb.wait_online(WAIT))
    await call_connects(pb, pa)  # and a new call works


async def test_a_call_in_setup_fails_but_the_phone_stays(
    restartable: Restartable, make_user: MakeUser, phones: list[Phone]
) -> None:
    pa = await connect(phones, make_user("alice"), restartable.url)
    pb = await connect(phones, make_user("bob"), restartable.url)
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    await restartable.stop()
    for call in (out, inc):
        outcome = await call.wait_ended(WAIT)
        assert outcome.reason is FailReason.SIGNALING_LOST, outcome
    missed = await pb.next_missed(WAIT)
    assert (missed.peer, missed.reason) == ("alice", "signaling_lost")
    await restartable.start()
    await asyncio.gather(pa.wait_online(WAIT), pb.wait_online(WAIT))
    await call_connects(pa, pb)


async def test_an_offline_phone_waits_for_the_link_then_gives_up(
    restartable: Restartable, make_user: MakeUser, phones: list[Phone]
) -> None:
    pa = await connect(phones, make_user("alice"), restartable.url, request_timeout=1.0)
    await restartable.stop()
    assert (await pa.next_link_change(WAIT)).state == "offline"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectionError):  # SignalingClosed("offline"), after request_timeout
        await pa.send_envelope("bob", b"x")
    assert 0.9 <= loop.time() - started < 5.0
    with pytest.raises(TimeoutError):
        await pa.wait_online(0.3)


async def test_fatal_errors_end_the_phone_without_retrying(
    server: SignalingServer, make_user: MakeUser, phones: list[Phone]
) -> None:
    """Another login of the same user elsewhere replaces the session: retrying would take the
    name back forever, so the phone ends with SessionReplaced."""
    alice = make_user("alice")
    first = await connect(phones, alice, url_of(server))
    second = await connect(phones, alice, url_of(server))
    lost = await first.wait_signaling_lost(WAIT)
    assert isinstance(lost, SessionReplaced) and not first.online
    assert first.reconnects == 0 and first.link_changes == []
    await asyncio.sleep(1.0)
    assert second.online and server.router.presence.lookup("alice") is not None
    assert second.link_changes == []  # never kicked back


async def test_reconnect_off_keeps_the_old_behaviour(
    restartable: Restartable, make_user: MakeUser, phones: list[Phone]
) -> None:
    pa = await connect(phones, make_user("alice"), restartable.url, reconnect=False)
    await restartable.stop()
    lost = await pa.wait_signaling_lost(WAIT)
    assert pa.signaling_lost is lost and not pa.online and pa.link_changes == []
    await restartable.start()
    await asyncio.sleep(1.5)
    assert not pa.online and pa.reconnects == 0


async def test_missed_calls_cancelled_and_busy(
    server: SignalingServer, make_user: MakeUser, phones: list[Phone]
) -> None:
    url = url_of(server)
    pa = await connect(phones, make_user("alice"), url)
    pb = await connect(phones, make_user("bob"), url)
    pc = await connect(phones, make_user("carol"), url)
    # alice rings bob and gives up before he answers
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    await out.hangup()
    assert (await inc.wait_ended(WAIT)).reason is EndReason.CANCELLED_REMOTE
    missed = await pb.next_missed(WAIT)
    assert (missed.peer, missed.reason) == ("alice", "cancelled")
    # bob is in a call with alice: carol's call is answered busy, and bob hears of it
    await call_connects(pa, pb)
    carol_out = await pc.call("bob")
    assert (await carol_out.wait_ended(WAIT)).reason is EndReason.BUSY
    missed = await pb.next_missed(WAIT)
    assert (missed.peer, missed.reason) == ("carol", "busy")
    assert [(m.peer, m.reason) for m in pb.missed] == [("alice", "cancelled"), ("carol", "busy")]
    assert pa.missed == [] and pc.missed == []  # callers miss nothing
