"""Losing the signaling server: calls in setup fail with a reason, connected calls go on.

Media runs peer to peer, so a CONNECTED call needs no server: when the server goes down (or a
network attacker resets the signaling TCP connection) the audio keeps flowing until the user
hangs up. A phone logs in again by itself (tests/integration/test_reconnect.py); with
``reconnect=False`` (the first test) the loss is final: the hangup cannot be sent, and the
peer's phone ends the call through its media timeout.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from signaling.server import SignalingServer, serve_signaling
from tests.integration.conftest import WAIT, MakePhone, MakeUser, server_config, url_of, wait_until
from tests.integration.link_proxy import LinkProxy
from voice.call.events import EndReason, FailReason, State
from voice.crypto.keyagreement import CallKeys
from voice.errors import PhoneClosed, SignalingClientError
from voice.phone import Call, Phone

MEDIA_TIMEOUT = 1.5  # short, so the far side ends soon after the hangup it never receives
FRAMES_AFTER_LOSS = 100  # 20 ms frames: two seconds of audio, longer than MEDIA_TIMEOUT


async def connected_pair(caller: Phone, callee: Phone) -> tuple[Call, Call]:
    out = await caller.call(callee.user)
    inc = await callee.incoming(timeout=WAIT)
    await inc.accept()
    await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
    return out, inc


def audio_in(call: Call) -> int:
    stats = call.media_stats()
    assert stats is not None
    return stats.rtp_packets_received


async def audio_keeps_flowing(*calls: Call) -> None:
    """Each call authenticates FRAMES_AFTER_LOSS more audio packets (bounded wait)."""
    start = {id(c): audio_in(c) for c in calls}
    await wait_until(lambda: all(audio_in(c) >= start[id(c)] + FRAMES_AFTER_LOSS for c in calls))


async def test_a_connected_call_outlives_the_signaling_server(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(serve_signaling(server_config()))
        no_retry = {"media_timeout": MEDIA_TIMEOUT, "reconnect": False}
        pa = await make_phone(alice, url=url_of(server), **no_retry)
        pb = await make_phone(bob, url=url_of(server), **no_retry)
        out, inc = await connected_pair(pa, pb)
        assert pa.signaling_lost is None and pb.signaling_lost is None
    # the server is shut down: both phones learn it, the call goes on
    for phone in (pa, pb):
        lost = await phone.wait_signaling_lost(WAIT)
        assert isinstance(lost, SignalingClientError) and phone.signaling_lost is lost
    await audio_keeps_flowing(out, inc)
    assert out.state is State.CONNECTED and inc.state is State.CONNECTED
    assert out.sas is not None and out.sas == inc.sas
    with pytest.raises(PhoneClosed):
        await pa.call("bob")  # nothing new without a server
    # alice hangs up: it ends at once on her side; her hangup envelope cannot be sent, so
    # bob's phone learns it from the media path: the authenticated RTCP BYE
    await out.hangup()
    assert (await out.wait_ended(WAIT)).reason is EndReason.HANGUP_LOCAL
    outcome = await inc.wait_ended(5.0)  # well inside the media timeout: it was the BYE
    assert outcome.reason is EndReason.HANGUP_REMOTE, outcome
    assert pa.reconnects == 0 and pa.signaling_lost is not None  # reconnect=False: for good
    await asyncio.wait_for(asyncio.gather(pa.close(), pb.close()), WAIT)  # bounded


async def test_a_connected_call_survives_a_reset_signaling_connection(
    server: SignalingServer, make_user: MakeUser, make_phone: MakePhone
) -> None:
    """A network attacker resets alice's signaling TCP connection mid-call (bob's stays up):
    the call goes on, alice's phone logs in again, and bob's hangup reaches her."""
    proxy = await LinkProxy(server.port).start()
    pa = await make_phone(make_user("alice"), url=proxy.url, media_timeout=MEDIA_TIMEOUT)
    pb = await make_phone(make_user("bob"), media_timeout=MEDIA_TIMEOUT)
    out, inc = await connected_pair(pa, pb)
    proxy.reset()
    change = await pa.next_link_change(WAIT)
    assert change.state == "offline" and pa.signaling_lost is None
    await audio_keeps_flowing(out, inc)
    assert out.state is State.CONNECTED and inc.state is State.CONNECTED
    await pa.wait_online(WAIT)
    assert pb.signaling_lost is None and pb.link_changes == []  # bob never noticed
    # bob hangs up; his hangup reaches alice through her new session
    await inc.hangup()
    assert (await inc.wait_ended(WAIT)).reason is EndReason.HANGUP_LOCAL
    assert (await out.wait_ended(WAIT)).reason is EndReason.HANGUP_REMOTE
    await asyncio.wait_for(pa.close(), WAIT)
    await proxy.close()


async def test_a_ringing_call_fails_cleanly_when_the_server_goes_away(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    with_keys: list[bytes] = []

    def observe(call_id: bytes, keys: CallKeys) -> None:
        with_keys.append(call_id)

    async with serve_signaling(server_config()) as server:
        pa = await make_phone(alice, url=url_of(server), key_observer=observe)
        pb = await make_phone(bob, url=url_of(server), key_observer=observe)
        out = await pa.call("bob")
        inc = await pb.incoming(timeout=WAIT)  # ringing: bob has not answered yet
        await wait_until(lambda: len(with_keys) == 2)  # the reveal arrived: nothing in flight
        assert out.state is State.RINGING_OUT and inc.state is State.RINGING_IN
    for call in (out, inc):
        outcome = await call.wait_ended(WAIT)
        assert outcome.reason is FailReason.SIGNALING_LOST and outcome.failed, outcome
    assert pa.active_call is None and pb.active_call is None
    for phone in (pa, pb):  # offline and reconnecting (no server comes back): not lost
        assert not phone.online and phone.signaling_lost is None
        assert [c.state for c in phone.link_changes] == ["offline"]
    with pytest.raises(TimeoutError):
        await pb.incoming(timeout=0.5)  # nothing rings, nothing ends the phone either
    await asyncio.wait_for(asyncio.gather(pa.close(), pb.close()), WAIT)
    with pytest.raises(PhoneClosed):
        await pb.incoming(timeout=WAIT)
