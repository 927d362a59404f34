"""Every outcome of the call state machine, end to end: real server, real media on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from signaling.server import SignalingServer, serve_signaling
from tests.integration.conftest import (
    WAIT,
    MakePhone,
    MakeUser,
    server_config,
    url_of,
    wait_until,
)
from voice.call.events import EndReason, FailReason, State
from voice.errors import (
    AlreadyInCall,
    CallEnded,
    KeyChangedError,
    PhoneClosed,
    RecipientOffline,
    UnknownUser,
)
from voice.phone import Call, Phone
from voice.phone.phone import CLOSE_GRACE

ROOT = Path(__file__).resolve().parents[2]


async def connected_pair(caller: Phone, callee: Phone) -> tuple[Call, Call]:
    out = await caller.call(callee.user)
    inc = await callee.incoming(timeout=WAIT)
    await inc.accept()
    await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
    return out, inc


async def test_accept_connects_both_sides_with_equal_sas_and_audio(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    pa, pb = await make_phone(alice), await make_phone(bob)
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    assert (inc.peer, inc.state, inc.sas) == ("alice", State.RINGING_IN, None)
    assert out.state is State.RINGING_OUT or out.state is State.DIALING
    await inc.accept()
    await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
    assert out.sas is not None and out.sas == inc.sas and str(out.sas)
    assert out.call_id == inc.call_id
    await wait_until(lambda: len(alice.sinks[0].frames) > 10)
    stats = out.media_stats()
    assert stats is not None and stats.rtp_packets_received > 0 and stats.auth_failures == 0
    assert out.continuity_warning is None  # first call: nothing retained, nothing to warn about
    await out.hangup()
    assert (await out.wait_ended(WAIT)).reason is EndReason.HANGUP_LOCAL
    assert (await inc.wait_ended(WAIT)).reason is EndReason.HANGUP_REMOTE
    assert out.media_stats() is not None  # the last counters survive the call
    assert pa.dropped == {} and pb.dropped == {}


async def test_decline(make_user: MakeUser, make_phone: MakePhone) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    await inc.decline()
    assert (await out.wait_ended(WAIT)).reason is EndReason.DECLINED_REMOTE
    assert (await inc.wait_ended(WAIT)).reason is EndReason.DECLINED_LOCAL
    with pytest.raises(CallEnded) as ended:
        await out.wait_connected(WAIT)
    assert ended.value.outcome == out.outcome


async def test_busy_when_the_callee_is_in_a_call(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    pc = await make_phone(make_user("carol"))
    out, inc = await connected_pair(pa, pb)
    third = await pc.call("bob")
    assert (await third.wait_ended(WAIT)).reason is EndReason.BUSY
    assert out.state is State.CONNECTED and inc.state is State.CONNECTED  # undisturbed
    with pytest.raises(AlreadyInCall):
        await pb.call("carol")


async def test_cancel_while_ringing(make_user: MakeUser, make_phone: MakePhone) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    await out.hangup()
    assert (await out.wait_ended(WAIT)).reason is EndReason.CANCELLED_LOCAL
    assert (await inc.wait_ended(WAIT)).reason is EndReason.CANCELLED_REMOTE
    with pytest.raises(CallEnded):
        await inc.accept()


async def test_no_answer_timeout(make_user: MakeUser, make_phone: MakePhone) -> None:
    pa = await make_phone(make_user("alice"), no_answer_timeout=1.0)
    pb = await make_phone(make_user("bob"))
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    assert (await out.wait_ended(WAIT)).reason is EndReason.NO_ANSWER
    assert (await inc.wait_ended(WAIT)).reason is EndReason.CANCELLED_REMOTE


@pytest.mark.parametrize("who", ["caller", "callee"])
async def test_hangup_by_either_side(make_user: MakeUser, make_phone: MakePhone, who: str) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    out, inc = await connected_pair(pa, pb)
    first, second = (out, inc) if who == "caller" else (inc, out)
    await first.hangup()
    assert (await first.wait_ended(WAIT)).reason is EndReason.HANGUP_LOCAL
    assert (await second.wait_ended(WAIT)).reason is EndReason.HANGUP_REMOTE
    for call in (out, inc):
        assert call.timings.ended_at is not None and call.media_stats() is not None


async def test_glare_leaves_exactly_one_connected_call(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    ca, cb = await asyncio.gather(pa.call("bob"), pb.call("alice"))
    survivors = [c.replaced_by or c for c in (ca, cb)]
    await asyncio.gather(*(c.wait_connected(WAIT) for c in survivors))
    assert survivors[0].call_id == survivors[1].call_id
    assert survivors[0].sas == survivors[1].sas
    for phone, survivor in ((pa, survivors[0]), (pb, survivors[1])):
        live = [c for c in phone.calls if not c.state.terminal]
        assert live == [survivor] and survivor.state is State.CONNECTED
    lost = [c for c in (ca, cb) if c.replaced_by is not None]
    assert len(lost) <= 1  # 0 only if one offer arrived before the other side dialed
    for call in lost:
        assert (await call.wait_ended(WAIT)).reason is EndReason.GLARE_LOST


async def test_calling_a_user_who_is_offline(make_user: MakeUser, make_phone: MakePhone) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    await pb.close()
    with pytest.raises(RecipientOffline):
        await pa.call("bob")
    (call,) = pa.calls
    assert call.outcome is not None and call.outcome.reason is FailReason.PEER_VANISHED
    assert pa.active_call is None
    with pytest.raises(PhoneClosed):
        await pb.call("alice")


async def test_calling_an_unknown_user(make_user: MakeUser, make_phone: MakePhone) -> None:
    pa = await make_phone(make_user("alice"))
    with pytest.raises(UnknownUser):
        await pa.call("nobody")
    assert pa.calls == [] and make_user("alice").contacts.get("nobody") is None


async def test_a_changed_key_is_refused_both_ways_and_never_rings(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    out, inc = await connected_pair(await make_phone(alice), await make_phone(bob))
    await out.hangup()
    await inc.wait_ended(WAIT)
    # The server restarts with an empty registry; "bob" is now someone with another key.
    new_bob = make_user("bob-new")
    new_bob.name = "bob"
    async with serve_signaling(server_config()) as second:
        pa = await make_phone(alice, url=url_of(second))
        pb = await make_phone(new_bob, url=url_of(second))
        with pytest.raises(KeyChangedError) as changed:
            await pa.call("bob")
        assert changed.value.user == "bob"
        assert pa.calls == []
        with pytest.raises(TimeoutError):
            await pb.incoming(timeout=1.0)  # nothing was sent: nothing rings
        # The other way: the impostor calls alice; she refuses it with a warning, no ring.
        theirs = await pb.call("alice")
        warning = await pa.next_warning(timeout=WAIT)
        assert warning.user == "bob" and "changed" in warning.message
        assert warning.new_fingerprint == new_bob.identity.fingerprint.human
        with pytest.raises(TimeoutError):
            await pa.incoming(timeout=0.5)
        assert pa.calls == [] and pa.dropped["key_changed"] >= 1
        await theirs.hangup()


async def test_ice_that_cannot_connect_fails_the_call_cleanly(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    # The callee only offers an IPv6 candidate, the caller only IPv4: no pair can work.
    pa = await make_phone(make_user("alice"), host_addresses=("127.0.0.1",), ice_timeout=2.0)
    pb = await make_phone(make_user("bob"), host_addresses=("::1",), ice_timeout=2.0)
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    await inc.accept()
    reasons = {FailReason.ICE_FAILED, FailReason.REMOTE_ERROR}
    for call in (out, inc):
        outcome = await call.wait_ended(WAIT)
        assert outcome.failed and outcome.reason in reasons, outcome
    assert FailReason.ICE_FAILED in {out.outcome.reason, inc.outcome.reason}  # type: ignore[union-attr]
    assert pa.active_call is None and pb.active_call is None


async def test_a_peer_process_that_dies_mid_call_ends_the_call(
    make_user: MakeUser, make_phone: MakePhone, server: SignalingServer, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.integration.peer_process"),
        *(url_of(server), "bob", str(tmp_path / "bob-proc")),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"ready"
        pa = await make_phone(make_user("alice"), media_timeout=1.5)
        out = await pa.call("bob")
        await out.wait_connected(WAIT)
        await wait_until(lambda: out.timings.first_audio_at is not None)
        proc.send_signal(signal.SIGKILL)  # no hangup, no goodbye: the process is gone
        assert await asyncio.wait_for(out.next_notice(), WAIT) == "reconnecting"  # at once
        outcome = await out.wait_ended(WAIT)
        assert outcome.reason is FailReason.MEDIA_LOST  # after the reconnect window
        assert pa.active_call is None
        await out.hangup()  # nothing left to do: no error
        # Quitting now does not wait for messages to a peer that is gone (it waited 5 s)
        started = asyncio.get_running_loop().time()
        await pa.close()
        assert asyncio.get_running_loop().time() - started < CLOSE_GRACE + 1.0
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)
