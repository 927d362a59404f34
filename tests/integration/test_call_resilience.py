"""Honest call state and a call that rides out a bad network, with real phones on loopback.

Real signaling server, real aioice, real SRTP. The network's failures are made with the
phones' send filters (each sees every outgoing SRTP audio packet and may drop it): a callee
whose audio never gets through, a pause in both directions, a peer whose audio stops for good.
Across real NATs and outages in network namespaces: tests/integration/test_real_network.py.
"""

from __future__ import annotations

import asyncio

from signaling.server import SignalingServer
from tests.integration.conftest import WAIT, MakePhone, MakeUser, wait_until
from voice.call.events import EndReason, FailReason, State
from voice.phone import Call


def _rtp_received(call: Call) -> int:
    stats = call.media_stats()
    return stats.rtp_packets_received if stats is not None else 0


async def test_connected_only_after_authenticated_audio_and_a_call_without_it_fails_naming_paths(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    pa = await make_phone(make_user("alice"), connect_timeout=3.0)
    pb = await make_phone(make_user("bob"), send_filter=lambda _packet: False)  # mute network
    out = await pa.call("bob")
    inc = await pb.incoming(WAIT)
    await inc.accept()
    await inc.wait_connected(WAIT)  # bob hears alice: connected there
    assert _rtp_received(inc) > 0
    assert out.state is State.CONNECTED and out.sas is None  # accepted, but nothing heard yet
    outcome = await out.wait_ended(WAIT)
    assert outcome.reason is FailReason.NO_MEDIA_PATH
    assert outcome.detail is not None and "tried" in outcome.detail, outcome.detail
    assert _rtp_received(out) == 0
    assert (await inc.wait_ended(WAIT)).reason is FailReason.REMOTE_ERROR


async def test_a_stranger_gets_the_callees_candidates_only_after_accept(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    pa = await make_phone(make_user("alice"))
    pb = await make_phone(make_user("bob"))
    out = await pa.call("bob")
    inc = await pb.incoming(WAIT)  # bob's phone rings for a stranger
    await wait_until(lambda: out.timings.ringing_at is not None)
    await asyncio.sleep(1.0)  # time enough for checks, had any started
    stats = [c.media_stats() for c in (out, inc)]
    assert all(s is not None and not s.ice_connected for s in stats)
    assert inc.private_ice
    await inc.accept()
    await out.wait_connected(WAIT)
    await inc.wait_connected(WAIT)
    await out.hangup()
    await inc.wait_ended(WAIT)

    # a second call from the same, still unverified, caller: still no candidates before accept
    second = await pa.call("bob")
    ringing = await pb.incoming(WAIT)
    assert ringing.private_ice
    await asyncio.sleep(1.0)
    assert not ringing.media_stats().ice_connected  # type: ignore[union-attr]
    await ringing.decline()
    await second.wait_ended(WAIT)

    # once bob verified alice (a compared SAS), ICE runs while the phone rings: faster set-up
    pb.config.contacts.mark_verified("alice")
    again = await pa.call("bob")
    ringing = await pb.incoming(WAIT)
    assert not ringing.private_ice
    await wait_until(lambda: bool((s := ringing.media_stats()) and s.ice_connected))
    assert ringing.state is State.RINGING_IN
    await ringing.decline()
    await again.wait_ended(WAIT)


async def test_a_hangup_reaches_the_peer_in_rtcp_while_the_server_is_down(
    make_user: MakeUser, make_phone: MakePhone, server: SignalingServer
) -> None:
    pa = await make_phone(make_user("alice"), reconnect=False)
    pb = await make_phone(make_user("bob"), reconnect=False)
    out = await pa.call("bob")
    inc = await pb.incoming(WAIT)
    await inc.accept()
    await out.wait_connected(WAIT)
    await inc.wait_connected(WAIT)
    await server.stop()
    await pa.wait_signaling_lost(WAIT)
    await pb.wait_signaling_lost(WAIT)
    await inc.hangup()  # the hangup envelope cannot reach anyone; the RTCP BYE does
    outcome = await out.wait_ended(5.0)
    assert outcome.reason is EndReason.HANGUP_REMOTE


async def test_a_pause_is_reconnecting_then_an_ice_restart_brings_the_audio_back(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    dark = asyncio.Event()
    pa = await make_phone(make_user("alice"), send_filter=lambda _p: not dark.is_set())
    pb = await make_phone(make_user("bob"), send_filter=lambda _p: not dark.is_set())
    out = await pa.call("bob")
    inc = await pb.incoming(WAIT)
    await inc.accept()
    await out.wait_connected(WAIT)
    await inc.wait_connected(WAIT)
    dark.set()  # both directions go quiet
    assert await asyncio.wait_for(out.next_notice(), WAIT) == "reconnecting"
    assert out.reconnecting
    await wait_until(lambda: out.ice_restarts + inc.ice_restarts > 0)  # a new path is in
    dark.clear()
    assert await asyncio.wait_for(out.next_notice(), WAIT) == "reconnected"
    before = _rtp_received(out)
    await wait_until(lambda: _rtp_received(out) > before + 25)  # half a second of audio more
    assert out.state is inc.state is State.CONNECTED and not out.reconnecting
    await out.hangup()
    assert (await inc.wait_ended(WAIT)).reason is EndReason.HANGUP_REMOTE


async def test_audio_that_never_comes_back_ends_the_call_after_the_reconnect_window(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    gone = asyncio.Event()
    pa = await make_phone(make_user("alice"), media_timeout=3.0)
    pb = await make_phone(make_user("bob"), send_filter=lambda _p: not gone.is_set())
    out = await pa.call("bob")
    inc = await pb.incoming(WAIT)
    await inc.accept()
    await out.wait_connected(WAIT)
    gone.set()
    began = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(out.next_notice(), WAIT) == "reconnecting"
    outcome = await out.wait_ended(WAIT)
    assert outcome.reason is FailReason.MEDIA_LOST
    # The window counts from the last packet heard, up to a frame or two before ``began``
    # (seen: 2.997 s): not ended before then.
    assert asyncio.get_running_loop().time() - began >= 3.0 - 0.1
    told = await inc.wait_ended(WAIT)  # told, not left to find out
    assert (told.reason, told.detail) == (FailReason.REMOTE_ERROR, "media_lost")
