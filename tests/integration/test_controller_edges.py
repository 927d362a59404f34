"""The call controller against a real server: junk and replays are dropped without disturbing a
call, continuity follows the storage rule, keys are observed then erased, close() is clean."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import pytest

from signaling.server import SignalingServer
from tests.integration.conftest import WAIT, MakePhone, MakeUser, url_of
from tests.integration.recording_proxy import RecordingProxy
from tests.signaling.helpers import make_user as make_login
from voice.call import events as ev
from voice.call import messages as m
from voice.call.events import EndReason, FailReason, State
from voice.crypto.callenvelope import seal_call
from voice.crypto.contacts import ContactBook, TrustState
from voice.crypto.continuity import ContinuityResult
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CallerKeyAgreement, CallKeys
from voice.errors import CallControlError, PhoneClosed
from voice.phone import Call, Phone


async def connect(caller: Phone, callee: Phone) -> tuple[Call, Call]:
    out = await caller.call(callee.user)
    inc = await callee.incoming(timeout=WAIT)
    await inc.accept()
    await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
    return out, inc


async def hang_up(out: Call, inc: Call) -> None:
    await out.hangup()
    await asyncio.gather(out.wait_ended(WAIT), inc.wait_ended(WAIT))


async def test_junk_replays_and_strangers_never_disturb_a_call(
    server: SignalingServer, make_user: MakeUser, make_phone: MakePhone
) -> None:
    proxy = await RecordingProxy(server.port).start()
    alice, bob = make_user("alice"), make_user("bob")
    pa, pb = await make_phone(alice, url=proxy.url), await make_phone(bob)
    out, inc = await connect(pa, pb)
    mallory_id = Identity.generate()
    mallory = await make_login("mallory").connect(url_of(server))

    def sealed(call_id: bytes, payload: bytes, seq: int = 0) -> bytes:
        header = EnvelopeHeader(call_id, seq, int(pa.config.hooks.clock() * 1000))
        return seal(mallory_id, bob.identity.public_key, header, payload)

    try:
        await mallory.send("bob", os.urandom(300))  # not an envelope
        await mallory.send("bob", sealed(os.urandom(16), m.encode(m.Hangup())))  # unknown call
        await mallory.send("bob", sealed(inc.call_id, m.encode(m.Hangup()), 1))  # not his call
        await mallory.send("bob", sealed(os.urandom(16), b"{not a call message"))
        replays = [
            json_body
            for op, payload in proxy.frames_to_server()
            if op == 1 and (json_body := _send_body(payload)) is not None
        ]
        assert len(replays) == 2  # the offer and the reveal, as alice sent them
        for body in replays:
            await mallory.send("bob", body)  # replayed verbatim: the guard refuses them all
        await asyncio.sleep(0.5)
        assert out.state is State.CONNECTED and inc.state is State.CONNECTED
        assert pb.dropped["bad_envelope"] == 1 + len(replays)
        assert pb.dropped["unsolicited"] == 2  # a stranger's hangups: not even routed
        assert pb.dropped["bad_message"] == 1
        assert bob.contacts.get("mallory") is None  # and nothing pinned
        before = inc.media_stats()
        await asyncio.sleep(0.3)
        after = inc.media_stats()
        assert before is not None and after is not None
        assert after.rtp_packets_received > before.rtp_packets_received  # audio kept flowing
    finally:
        await mallory.close()
        await hang_up(out, inc)
        await proxy.close()


def _send_body(payload: bytes) -> bytes | None:
    frame = json.loads(payload)
    return base64.b64decode(frame["body"]) if frame.get("type") == "send" else None


async def test_a_malformed_message_from_the_peer_fails_the_call(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    keys: dict[bytes, CallKeys] = {}
    pa = await make_phone(alice, key_observer=lambda cid, k: keys.setdefault(cid, k))
    pb = await make_phone(bob)
    out, inc = await connect(pa, pb)
    header = EnvelopeHeader(out.call_id, 50, int(pa.config.hooks.clock() * 1000))
    # In a connected call alice seals with the call's key: authentic, fresh, not a message.
    body = seal_call(keys[out.call_id].envelope_tx, header, b'{"v":1,"type":"nope"}')
    await pa.send_envelope("bob", body)
    assert (await inc.wait_ended(WAIT)).reason is FailReason.BAD_MESSAGE
    outcome = await out.wait_ended(WAIT)
    assert (outcome.reason, outcome.detail) == (FailReason.REMOTE_ERROR, "bad_message")


async def test_continuity_links_every_call_and_warns_on_a_mismatch(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    pa, pb = await make_phone(alice), await make_phone(bob)
    out, inc = await connect(pa, pb)  # 1: nobody compares the SAS: the chain starts anyway
    await hang_up(out, inc)
    first = alice.contacts.get_retained("bob").current
    assert first is not None and bob.contacts.get_retained("alice").current == first
    out, inc = await connect(pa, pb)  # 2: a MATCH; only alice confirms the SAS
    assert out.continuity is inc.continuity is ContinuityResult.MATCH
    out.mark_verified()
    await hang_up(out, inc)
    assert alice.contacts.get("bob").state is TrustState.VERIFIED  # type: ignore[union-attr]
    assert bob.contacts.get("alice").state is TrustState.UNVERIFIED  # type: ignore[union-attr]
    second = alice.contacts.get_retained("bob")
    assert second == bob.contacts.get_retained("alice") and second.previous == first
    out, inc = await connect(pa, pb)  # 3: one side verifying left no gap: no warning
    assert out.continuity is inc.continuity is ContinuityResult.MATCH
    assert out.continuity_warning is None and inc.continuity_warning is None
    await hang_up(out, inc)
    rotated = alice.contacts.get_retained("bob")
    assert rotated.current not in (None, second.current) and rotated.previous == second.current
    # 4: bob lost his contact book (same identity): alice is warned, and keeps her secrets
    bob.contacts.path.unlink()
    bob.contacts = ContactBook(bob.contacts.path)
    pb2 = await make_phone(bob)
    out, inc = await connect(pa, pb2)
    assert out.continuity_warning is not None and "mismatch" in out.continuity_warning.lower()
    assert inc.continuity_warning is None  # bob has nothing retained: nothing to compare
    await hang_up(out, inc)
    assert alice.contacts.get_retained("bob") == rotated  # a MISMATCH is not a link
    assert bob.contacts.get_retained("alice").current is not None  # bob's first link
    out, inc = await connect(pa, pb2)  # 5: still a mismatch for alice, now for bob too ...
    assert out.continuity is inc.continuity is ContinuityResult.MISMATCH
    out.mark_verified()  # ... until they compare the SAS: both keep this call's secret
    inc.mark_verified()
    await hang_up(out, inc)
    out, inc = await connect(pa, pb2)  # 6: the chain is whole again
    assert out.continuity is inc.continuity is ContinuityResult.MATCH
    await hang_up(out, inc)


async def test_the_key_observer_sees_matching_keys_that_are_erased_at_the_end(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    seen: dict[str, CallKeys] = {}
    pa = await make_phone(make_user("alice"), key_observer=lambda cid, k: seen.update(a=k))
    pb = await make_phone(make_user("bob"), key_observer=lambda cid, k: seen.update(b=k))
    out, inc = await connect(pa, pb)
    assert seen["a"].srtp_gcm_tx == seen["b"].srtp_gcm_rx != bytes(44)
    assert seen["a"].sas == seen["b"].sas == out.sas
    assert seen["a"].continuity is ContinuityResult.NONE
    await hang_up(out, inc)
    for keys in seen.values():
        assert keys.srtp_gcm_tx == bytes(44) and keys.srtp_gcm_rx == bytes(44)


async def test_close_hangs_up_every_call_and_stops_the_phone(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    out, inc = await connect(pa, pb)
    await pb.close()
    assert inc.outcome is not None and inc.outcome.reason is EndReason.HANGUP_LOCAL
    assert (await out.wait_ended(WAIT)).reason is EndReason.HANGUP_REMOTE
    with pytest.raises(PhoneClosed):
        await pb.incoming(timeout=WAIT)
    with pytest.raises(PhoneClosed):
        await pb.call("alice")
    await pb.close()  # idempotent


async def test_close_while_dialing_cancels_the_ringing_peer(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    await pa.close()
    assert out.outcome is not None and out.outcome.reason is EndReason.CANCELLED_LOCAL
    assert (await inc.wait_ended(WAIT)).reason is EndReason.CANCELLED_REMOTE


async def test_dialing_someone_who_is_calling_us_accepts_their_call(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    pa, pb = await make_phone(make_user("alice")), await make_phone(make_user("bob"))
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)
    again = await pb.call("alice")
    assert again is inc
    await asyncio.gather(out.wait_connected(WAIT), inc.wait_connected(WAIT))
    assert len(pb.calls) == 1
    with pytest.raises(CallControlError):
        await pa.call("alice")
    await hang_up(out, inc)


async def test_losing_the_signaling_server_ends_calls_in_setup(
    make_user: MakeUser, make_phone: MakePhone, server: SignalingServer
) -> None:
    proxy = await RecordingProxy(server.port).start()
    pa = await make_phone(make_user("alice"), url=proxy.url)
    pb = await make_phone(make_user("bob"))
    out = await pa.call("bob")
    await pb.incoming(timeout=WAIT)
    await proxy.close()  # alice's signaling connection drops
    assert (await out.wait_ended(WAIT)).reason is FailReason.SIGNALING_LOST
    assert not pa.online and pa.signaling_lost is None  # reconnecting (the proxy is gone)
    assert [change.state for change in pa.link_changes] == ["offline"]


async def test_an_unused_ephemeral_secret_is_erased_when_the_call_ends(
    make_user: MakeUser, make_phone: MakePhone, server: SignalingServer
) -> None:
    bob = await make_login("bob").connect(url_of(server))  # online, but never answers
    try:
        pa = await make_phone(make_user("alice"))
        out = await pa.call("bob")
        agreement = out._media.agreement.exchange
        assert isinstance(agreement, CallerKeyAgreement)
        secret = agreement._secret  # never used: no ringing, so no eph_b
        assert secret is not None and secret != bytes(32)
        await out.hangup()
        assert (await out.wait_ended(WAIT)).reason is EndReason.CANCELLED_LOCAL
        assert secret == bytes(32)  # zeroed in place when the call ended
    finally:
        await bob.close()


async def test_a_glare_loss_queued_behind_another_input_still_ends_as_glare_lost(
    make_user: MakeUser, make_phone: MakePhone, server: SignalingServer
) -> None:
    bob = await make_login("bob").connect(url_of(server))  # online, but never answers
    try:
        pa = await make_phone(make_user("alice"))
        out = await pa.call("bob")
        pending = out.post(ev.IceConnected())  # not handled yet when the glare is decided
        out.handle_now(ev.GlareLost())  # as Phone does when bob's offer wins
        assert (await out.wait_ended(WAIT)).reason is EndReason.GLARE_LOST
        assert (await pending) is not None  # handled (refused: the call had ended)
    finally:
        await bob.close()


async def test_a_contact_cannot_be_verified_before_a_sas_was_shown(
    make_user: MakeUser, make_phone: MakePhone
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    pa, pb = await make_phone(alice), await make_phone(bob)
    out = await pa.call("bob")
    inc = await pb.incoming(timeout=WAIT)  # ringing: no keys, no SAS on either side
    assert out.sas is None and inc.sas is None
    for call in (out, inc):
        with pytest.raises(CallControlError, match="no SAS"):
            call.mark_verified()
    assert alice.contacts.get("bob").state is TrustState.UNVERIFIED  # type: ignore[union-attr]
    assert bob.contacts.get("alice").state is TrustState.UNVERIFIED  # type: ignore[union-attr]
    await out.hangup()
    await inc.wait_ended(timeout=WAIT)
