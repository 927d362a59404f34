"""Every call outcome end to end: two machines wired together through the real wire format."""

from __future__ import annotations

import pytest

from tests.voice.call.call_harness import FakePhone, Pair, connected, ringing
from voice.call import events as ev
from voice.call import messages as m
from voice.call.events import EndReason, FailReason, State
from voice.call.machine import CallMachine
from voice.call.messages import Hangup, encode
from voice.call.outbound import CallSealer


def after_keys(machine: CallMachine) -> State:
    return machine.state  # read again: the machine moved under mypy's narrowing


def kinds(phone: FakePhone, call_id: bytes) -> list[str]:
    return [type(e).__name__ for e in phone.effects(call_id)]


def test_accept_starts_media_once_on_both_sides_after_one_round_trip(pair: Pair) -> None:
    wire, alice, bob = pair
    a, b = ringing(pair)
    assert "Ring" in kinds(bob, b.call_id) and "Ringback" in kinds(alice, a.call_id)
    assert "StartMedia" not in kinds(alice, a.call_id) + kinds(bob, b.call_id)
    bob.do(b, ev.UserAccept())
    assert b.state is State.CONNECTED  # callee starts media at once
    assert len(wire.queue) == 1  # only `accept` crosses the wire
    wire.run()
    assert a.state is State.CONNECTED
    for phone, call in ((alice, a), (bob, b)):
        names = kinds(phone, call.call_id)
        assert names.count("StartMedia") == 1
        assert names.index("StopRinging") < names.index("StartMedia")
        assert "ShowSas" not in names  # "connected" waits for the first authenticated packet
        phone.do(call, ev.MediaFlowing())
        assert kinds(phone, call.call_id).count("ShowSas") == 1


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_hangup_by_either_side(pair: Pair, who: str) -> None:
    wire, alice, bob = pair
    a, b = connected(pair)
    local, remote = (a, b) if who == "alice" else (b, a)
    (alice if who == "alice" else bob).do(local, ev.UserHangup())
    wire.run()
    assert (local.state, local.reason) == (State.ENDED, EndReason.HANGUP_LOCAL)
    assert (remote.state, remote.reason) == (State.ENDED, EndReason.HANGUP_REMOTE)
    for phone, call in ((alice, a), (bob, b)):
        assert kinds(phone, call.call_id)[-2:] == ["StopMedia", "EndCall"]


def test_callee_accepts_before_reveal_arrives(pair: Pair) -> None:
    wire, alice, bob = pair
    a = alice.dial("bob")
    wire.deliver_one()  # offer
    wire.deliver_one()  # ringing; the reveal is now in flight
    b = bob.calls[a.call_id]
    assert wire.queue and not b.keys_ready
    bob.do(b, ev.UserAccept())
    assert b.state is State.CONNECTING
    assert "StartMedia" not in kinds(bob, b.call_id)
    assert len(wire.queue) == 1  # accept waits for our keys
    wire.run()
    assert (a.state, b.state) == (State.CONNECTED, State.CONNECTED)


def test_both_ends_derive_the_same_sas_and_mirrored_srtp_keys(pair: Pair) -> None:
    _, alice, bob = pair
    a, b = connected(pair)
    ka, kb = alice.keys[a.call_id], bob.keys[b.call_id]
    assert ka.sas == kb.sas
    assert (ka.srtp_gcm_tx, ka.srtp_gcm_rx) == (kb.srtp_gcm_rx, kb.srtp_gcm_tx)


def test_caller_reveals_only_after_its_keys_are_ready(pair: Pair) -> None:
    _, alice, _ = pair
    a, _ = ringing(pair)
    names = kinds(alice, a.call_id)
    assert names.index("DeriveKeys") < names.index("SendMessage", 1)  # offer, then reveal
    assert alice.sent(a.call_id) == ["offer", "reveal"]


def test_low_order_answer_key_fails_the_caller_before_it_reveals(pair: Pair) -> None:
    wire, alice, bob = pair
    bob.bad_eph_b = True
    a = alice.dial("bob")
    wire.run()
    b = bob.calls[a.call_id]
    assert (a.state, a.reason) == (State.FAILED, FailReason.BAD_KEY)
    assert alice.sent(a.call_id) == ["offer", "error"]
    assert (b.state, b.detail) == (State.FAILED, "bad_key")


def test_decline(pair: Pair) -> None:
    wire, _, bob = pair
    a, b = ringing(pair)
    bob.do(b, ev.UserDecline())
    wire.run()
    assert (b.state, b.reason) == (State.ENDED, EndReason.DECLINED_LOCAL)
    assert (a.state, a.reason) == (State.ENDED, EndReason.DECLINED_REMOTE)


def test_busy_when_callee_is_in_another_call(pair: Pair) -> None:
    wire, alice, bob = pair
    carol = wire.add("carol")
    carol_call = carol.dial("bob")
    wire.run()
    bob.do(bob.calls[carol_call.call_id], ev.UserAccept())
    wire.run()
    a = alice.dial("bob")
    wire.run()
    assert (a.state, a.reason) == (State.ENDED, EndReason.BUSY)
    assert a.call_id not in bob.calls
    assert bob.calls[carol_call.call_id].state is State.CONNECTED  # untouched


def test_cancel_by_caller(pair: Pair) -> None:
    wire, alice, bob = pair
    a, b = ringing(pair)
    alice.do(a, ev.UserHangup())
    wire.run()
    assert (a.state, a.reason) == (State.ENDED, EndReason.CANCELLED_LOCAL)
    assert (b.state, b.reason) == (State.ENDED, EndReason.CANCELLED_REMOTE)
    assert kinds(bob, b.call_id)[-2:] == ["StopRinging", "EndCall"]


def test_no_answer_timeout(pair: Pair) -> None:
    wire, _, _ = pair
    a, b = ringing(pair)
    wire.advance(59.9)
    assert (a.state, b.state) == (State.RINGING_OUT, State.RINGING_IN)
    wire.advance(0.1)
    wire.run()
    assert (a.state, a.reason) == (State.ENDED, EndReason.NO_ANSWER)
    assert (b.state, b.reason) == (State.ENDED, EndReason.CANCELLED_REMOTE)


def test_callee_stops_ringing_by_itself_when_the_cancel_is_lost(pair: Pair) -> None:
    wire, _, bob = pair
    _a, b = ringing(pair)
    wire.drop.add("cancel")
    wire.advance(60.0)
    wire.run()
    assert b.state is State.RINGING_IN
    wire.advance(5.0)
    assert (b.state, b.reason) == (State.ENDED, EndReason.NO_ANSWER)
    assert kinds(bob, b.call_id)[-2:] == ["StopRinging", "EndCall"]


def test_an_offer_that_never_rings_is_unreachable_not_no_answer(pair: Pair) -> None:
    wire, alice, _ = pair
    wire.drop.add("offer")
    a = alice.dial("bob")
    wire.run()
    wire.advance(24.0)
    assert a.state is State.DIALING
    wire.advance(1.0)
    assert (a.state, a.reason) == (State.FAILED, FailReason.UNREACHABLE)
    assert alice.sent(a.call_id)[-1] == "cancel"  # a late offer must not ring


def test_no_answer_after_ringing(pair: Pair) -> None:
    wire, _alice, _bob = pair
    a, b = ringing(pair)
    wire.advance(59.0)
    assert a.state is State.RINGING_OUT
    wire.advance(1.0)
    wire.run()
    assert (a.state, a.reason) == (State.ENDED, EndReason.NO_ANSWER)
    assert (b.state, b.reason) == (State.ENDED, EndReason.CANCELLED_REMOTE)


def test_candidates_reach_a_stranger_caller_only_after_accept(pair: Pair) -> None:
    wire, alice, bob = pair
    bob.private_ice = True
    a, b = ringing(pair)
    assert a.call_id not in alice.started_ice  # nothing to check against yet
    assert b.call_id not in bob.started_ice  # and the callee starts no STUN checks
    assert "ice" not in bob.sent(b.call_id)
    bob.do(b, ev.UserAccept())
    assert bob.sent(b.call_id)[-1] == "accept"
    names = kinds(bob, b.call_id)
    assert names.index("SendCandidates") > names.index("SendMessage", names.index("StopRinging"))
    assert len(bob.started_ice[b.call_id]) == 1
    wire.run()
    assert a.state is State.CONNECTED
    [remote] = alice.started_ice[a.call_id]
    assert remote["ice"]["candidates"] == bob.candidates()  # type: ignore[index]
    assert remote["ice"]["ufrag"] == "bob"  # type: ignore[index]  # the committed one


def test_candidates_are_refused_twice_and_from_the_callee_side(pair: Pair) -> None:
    wire, alice, bob = pair
    a, b = connected(pair)
    again = m.Ice(0, {"candidates": ["x"]})
    assert not alice.calls[a.call_id].receive(wire.now, a.call_id, again).ok  # ICE ran already
    assert not bob.calls[b.call_id].receive(wire.now, b.call_id, again).ok  # callers never


def test_candidates_before_accept_are_refused(pair: Pair) -> None:
    wire, alice, bob = pair
    bob.private_ice = True
    a, _ = ringing(pair)
    early = m.Ice(0, {"candidates": ["attacker"]})
    assert not alice.calls[a.call_id].receive(wire.now, a.call_id, early).ok  # before accept
    assert a.call_id not in alice.started_ice


def test_an_identity_sealed_ice_message_is_refused(pair: Pair) -> None:
    """A thief of bob's identity key cannot steer alice's ICE: ``ice`` must be call-sealed."""
    wire, alice, bob = pair
    bob.private_ice = True
    a, b = ringing(pair)
    wire.drop.add("ice")  # the honest candidates are held back ...
    bob.do(b, ev.UserAccept())
    wire.run()
    wire.drop.clear()
    assert a.state is State.CONNECTED and a.call_id not in alice.started_ice
    forged = CallSealer(bob.identity, alice.identity.public_key, a.call_id, wire.clock)
    for _ in range(10):  # past the sequence numbers bob used
        forged.seal(m.Hangup())
    # ... and the thief's, sealed under bob's identity key, arrive instead
    alice.on_envelope("bob", forged.seal(m.Ice(0, {"candidates": ["attacker"]})))
    assert a.call_id not in alice.started_ice and "identity_sealed" in alice.rejected


def test_connected_call_without_authenticated_audio_fails_no_media_path(pair: Pair) -> None:
    wire, _alice, bob = pair
    a, b = connected(pair)
    wire.advance(19.0)
    assert a.state is State.CONNECTED
    bob.do(b, ev.MediaFlowing())
    wire.advance(1.0)
    assert (a.state, a.reason) == (State.FAILED, FailReason.NO_MEDIA_PATH)
    assert b.state is State.CONNECTED  # audio flowed there: no deadline any more


def test_media_lost_and_rtcp_bye_end_a_connected_call(pair: Pair) -> None:
    _wire, alice, bob = pair
    a, b = connected(pair)
    alice.do(a, ev.MediaFlowing())
    bob.do(b, ev.MediaFlowing())
    alice.do(a, ev.MediaLost(30.0))
    assert (a.state, a.reason, a.detail) == (
        State.FAILED,
        FailReason.MEDIA_LOST,
        "no audio for 30 s",
    )
    bob.do(b, ev.PeerHungUp())
    assert (b.state, b.reason) == (State.ENDED, EndReason.HANGUP_REMOTE)


def test_ice_restart_is_taken_only_in_a_connected_call(pair: Pair) -> None:
    wire, alice, bob = pair
    a, b = ringing(pair)
    restart = m.Ice(1, {"candidates": ["c"], "ufrag": "abcd", "pwd": "p" * 22})
    assert not alice.calls[a.call_id].receive(wire.now, a.call_id, restart).ok
    bob.do(b, ev.UserAccept())
    wire.run()
    step = alice.calls[a.call_id].receive(wire.now, a.call_id, restart)
    assert step.effects == (ev.RestartIce(restart),)


@pytest.mark.parametrize("winner", ["alice", "bob"])
@pytest.mark.parametrize("first_delivered", ["alice", "bob"])
def test_glare_resolves_to_one_call_on_both_ends(
    pair: Pair, winner: str, first_delivered: str
) -> None:
    wire, alice, bob = pair
    high, low = b"\xff" * 16, b"\x01" * 16
    a_out = alice.dial("bob", high if winner == "alice" else low)
    b_out = bob.dial("alice", low if winner == "alice" else high)
    if first_delivered == "bob":
        wire.queue.rotate(1)
    wire.run()
    a_live, b_live = alice.only_live(), bob.only_live()
    assert a_live.call_id == b_live.call_id == (high)
    loser_call = b_out if winner == "alice" else a_out
    assert (loser_call.state, loser_call.reason) == (State.ENDED, EndReason.GLARE_LOST)
    callee_phone, callee = (bob, b_live) if winner == "alice" else (alice, a_live)
    callee_phone.do(callee, ev.UserAccept())
    wire.run()
    assert (a_live.state, b_live.state) == (State.CONNECTED, State.CONNECTED)


def test_commitment_mismatch_fails_both_sides(pair: Pair) -> None:
    wire, alice, bob = pair
    alice.tamper_reveal = True
    a = alice.dial("bob")
    wire.run()
    b = bob.calls[a.call_id]
    assert (b.state, b.reason) == (State.FAILED, FailReason.COMMITMENT_MISMATCH)
    assert (a.state, a.reason, a.detail) == (
        State.FAILED,
        FailReason.REMOTE_ERROR,
        "commitment_mismatch",
    )
    assert "StartMedia" not in kinds(alice, a.call_id) + kinds(bob, b.call_id)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ev.IceFailed(), FailReason.ICE_FAILED),
        (ev.MediaFailed(), FailReason.MEDIA_FAILED),
        (ev.KeyChanged(), FailReason.KEY_CHANGED),
    ],
)
@pytest.mark.parametrize("stage", ["ringing", "connected"])
def test_local_failure_is_reported_to_the_peer(
    pair: Pair, event: ev.LocalEvent, reason: FailReason, stage: str
) -> None:
    wire, alice, _ = pair
    a, b = ringing(pair) if stage == "ringing" else connected(pair)
    alice.do(a, event)
    wire.run()
    assert (a.state, a.reason) == (State.FAILED, reason)
    assert (b.state, b.reason, b.detail) == (State.FAILED, FailReason.REMOTE_ERROR, reason.value)


def test_peer_vanished_tells_nobody(pair: Pair) -> None:
    wire, alice, _ = pair
    a, b = connected(pair)
    alice.do(a, ev.PeerVanished())
    assert not wire.queue
    assert (a.state, a.reason) == (State.FAILED, FailReason.PEER_VANISHED)
    assert b.state is State.CONNECTED


def test_garbage_payload_for_a_live_call_fails_it(pair: Pair) -> None:
    wire, _alice, _bob = pair
    a, b = ringing(pair)
    wire.send("alice", "bob", a.call_id, b'{"type":"accept"')
    wire.run()
    assert (b.state, b.reason) == (State.FAILED, FailReason.BAD_MESSAGE)
    assert (a.state, a.detail) == (State.FAILED, "bad_message")


def test_setup_timeout_when_reveal_never_comes(pair: Pair) -> None:
    wire, alice, bob = pair
    wire.drop.add("reveal")
    a = alice.dial("bob")
    wire.run()
    b = bob.calls[a.call_id]
    bob.do(b, ev.UserAccept())
    wire.advance(19.0)
    assert b.state is State.CONNECTING
    wire.advance(1.0)
    wire.run()
    assert (b.state, b.reason) == (State.FAILED, FailReason.SETUP_TIMEOUT)
    assert (a.state, a.detail) == (State.FAILED, "setup_timeout")


def test_replayed_offer_of_an_ended_call_does_not_ring_again(pair: Pair) -> None:
    wire, alice, bob = pair
    a, _b = ringing(pair)
    alice.do(a, ev.UserHangup())
    wire.run()
    offer = next(e.message for e in alice.effects(a.call_id) if isinstance(e, ev.SendMessage))
    wire.send("alice", "bob", a.call_id, encode(offer))  # sealed afresh: only routing refuses it
    wire.run()
    assert bob.rejected[-1] == "offer_for_a_call_id_we_already_know"
    assert [c.state for c in bob.calls.values()] == [State.ENDED]


def test_message_for_unknown_call_or_from_the_wrong_peer_is_rejected(pair: Pair) -> None:
    wire, _alice, bob = pair
    carol, _dave = wire.add("carol"), wire.add("dave")
    bob.contacts.check("carol", carol.identity.public_key)  # someone bob knows
    a, b = ringing(pair)
    wire.send("carol", "bob", a.call_id, encode(Hangup()))
    wire.send("dave", "bob", a.call_id, encode(Hangup()))  # a stranger: only offers get in
    wire.send("alice", "bob", b"\x00" * 16, encode(Hangup()))
    wire.run()
    assert bob.rejected == ["call_belongs_to_another_peer", "unsolicited", "unknown_call_id"]
    assert bob.contacts.get("dave") is None  # and left no trace
    assert b.state is State.RINGING_IN
    assert carol.calls == {}


def test_after_connect_every_message_is_sealed_with_the_calls_own_key(pair: Pair) -> None:
    """Audit finding 10: a later thief of an identity key reads at most the set-up messages."""
    wire, alice, bob = pair
    a = alice.dial("bob")
    bodies: list[tuple[str, bytes]] = []
    while wire.queue:
        sender, _, body = wire.queue[0]
        bodies.append((sender, body))
        wire.deliver_one()
    b = bob.calls[a.call_id]
    bob.do(b, ev.UserAccept())
    accept = wire.queue[0][2]
    wire.run()
    alice.do(a, ev.UserHangup())
    hangup = wire.queue[0][2]
    wire.run()
    assert [body[0] for _, body in bodies] == [1, 1, 1]  # offer, ringing, reveal: identities
    assert accept[0] == 2 and hangup[0] == 2  # the call's own keys
    assert (b.state, b.reason) == (State.ENDED, EndReason.HANGUP_REMOTE)


def test_an_identity_sealed_message_in_a_connected_call_is_refused(pair: Pair) -> None:
    """What a thief of alice's identity key could forge: refused once the call connected."""
    wire, alice, bob = pair
    a, b = connected(pair)
    sealer = alice.sealer("bob", a.call_id)
    forged = CallSealer(alice.identity, bob.identity.public_key, a.call_id, wire.clock)
    for _ in range(10):  # past the seqs alice used
        forged.seal(Hangup())
    wire.queue.append(("alice", "bob", forged.seal(Hangup())))
    wire.run()
    assert b.state is State.CONNECTED and bob.rejected[-1] == "identity_sealed"
    assert sealer.call_keyed


def test_a_cancel_crossing_the_accept_ends_the_callees_call(pair: Pair) -> None:
    """bob accepts as alice gives up: her cancel (identity-sealed: she has no accept yet)
    crosses his accept and still ends his call, as cancelled."""
    wire, alice, bob = pair
    a, b = ringing(pair)
    bob.do(b, ev.UserAccept())  # accept in flight
    alice.do(a, ev.UserHangup())  # cancel in flight
    wire.run()
    assert (a.state, a.reason) == (State.ENDED, EndReason.CANCELLED_LOCAL)
    assert (b.state, b.reason) == (State.ENDED, EndReason.CANCELLED_REMOTE)
