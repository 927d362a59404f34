"""Key-agreement versions in whole calls (the in-memory pair): what happens when the two phones
do not share a version, and what each user is told (docs/protocol.md, Part 2, section 4).

A phone offers and accepts version 2 (hybrid X25519 + ML-KEM-768) only. Version 1 (X25519
alone) stands in here for an app that cannot do post-quantum; an offer without a version list
is what an app from before version 2 sends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tests.voice.call.call_harness import FakePhone, Pair
from voice.call import events as ev
from voice.call import messages as m
from voice.call.agreement import CallAgreement
from voice.call.events import FailReason, State
from voice.cli.summary import end_text
from voice.crypto.kem import encapsulation_key


def speaks(phone: FakePhone, versions: Sequence[int]) -> None:
    """Make ``phone`` offer and accept ``versions`` in its next calls."""
    new_call = phone._new_call

    def with_versions(role: ev.Role, peer: str, peer_key: bytes, call_id: bytes):  # type: ignore[no-untyped-def]
        machine = new_call(role, peer, peer_key, call_id)
        parties = phone._agreements[call_id].parties
        phone._agreements[call_id] = CallAgreement(parties, versions=versions)
        return machine

    phone._new_call = with_versions  # type: ignore[method-assign]


def ended(phone: FakePhone, call_id: bytes) -> ev.EndCall:
    (end,) = [e for e in phone.effects(call_id) if isinstance(e, ev.EndCall)]
    return end


def test_phones_agree_on_version_2(pair: Pair) -> None:
    wire, alice, bob = pair
    speaks(alice, (1, 2))  # a phone that could also do version 1 still gets version 2
    a = alice.dial("bob")
    wire.run()
    bob.do(bob.calls[a.call_id], ev.UserAccept())
    wire.run()
    ka, kb = alice.keys[a.call_id], bob.keys[a.call_id]
    assert ka.sas == kb.sas and ka.srtp_gcm_tx == kb.srtp_gcm_rx
    offer, ringing = (
        next(e.message for e in p.effects(a.call_id) if isinstance(e, ev.SendMessage))
        for p in (alice, bob)
    )
    assert isinstance(offer, m.Offer) and isinstance(ringing, m.Ringing)
    assert offer.versions == (1, 2) and len(offer.mlkem_ek) == 1184
    assert ringing.versions == (2,) and ringing.version == 2 and len(ringing.mlkem_ct) == 1088


def test_a_caller_without_version_2_is_refused_and_told_why(pair: Pair) -> None:
    """The callee never rings; both users get ``unsupported_version``, the caller as the
    callee's reason, and the CLI says what to do."""
    wire, alice, bob = pair
    speaks(alice, (1,))
    a = alice.dial("bob")
    wire.run()
    b = bob.calls[a.call_id]
    assert a.state is State.FAILED and b.state is State.FAILED
    assert not any(isinstance(e, ev.Ring) for e in bob.effects(a.call_id))
    assert bob.sent(a.call_id) == ["error"]  # no ringing: nothing of bob's was exchanged
    assert ended(bob, a.call_id) == ev.EndCall(FailReason.UNSUPPORTED_VERSION)
    assert ended(alice, a.call_id) == ev.EndCall(FailReason.REMOTE_ERROR, "unsupported_version")
    text = end_text(FailReason.UNSUPPORTED_VERSION, "alice")
    assert "share no post-quantum key-agreement version" in text and "update" in text
    assert a.call_id not in alice.keys and a.call_id not in bob.keys


def test_an_offer_from_before_version_2_is_refused_the_same_way(pair: Pair) -> None:
    """An app from before negotiation sends an offer without a version list: the callee answers
    ``error unsupported_version`` (which that app shows as the peer's error) instead of ringing
    for a call it could not secure."""
    wire, alice, bob = pair
    call_id = os.urandom(16)
    bob.contacts.check("alice", alice.identity.public_key)
    legacy = m.Offer(os.urandom(32), alice.description())
    assert m.encode(legacy).count(b"versions") == 0  # the old wire form
    wire.send("alice", "bob", call_id, m.encode(legacy))
    wire.deliver_one()
    b = bob.calls[call_id]
    assert b.state is State.FAILED
    assert ended(bob, call_id) == ev.EndCall(FailReason.UNSUPPORTED_VERSION)
    (error,) = [e.message for e in bob.effects(call_id) if isinstance(e, ev.SendMessage)]
    assert error == m.CallError("unsupported_version")


def test_a_callee_without_version_2_refuses_too(pair: Pair) -> None:
    wire, alice, bob = pair
    speaks(bob, (1,))
    a = alice.dial("bob")
    wire.run()
    assert ended(bob, a.call_id) == ev.EndCall(FailReason.UNSUPPORTED_VERSION)
    assert ended(alice, a.call_id) == ev.EndCall(FailReason.REMOTE_ERROR, "unsupported_version")


def test_a_ringing_that_picks_a_lower_version_fails_the_caller(pair: Pair) -> None:
    """Both phones could do versions 1 and 2; a ringing that names both but picks 1 is a
    downgrade the caller sees by itself: it fails the call and tells the callee why."""
    wire, alice, bob = pair
    speaks(alice, (1, 2))
    speaks(bob, (1, 2))
    send = wire.send

    def downgrade(sender: str, to: str, call_id: bytes, payload: bytes) -> None:
        msg = m.decode(payload)
        if isinstance(msg, m.Ringing):
            payload = m.encode(m.Ringing(msg.eph_b, msg.continuity_b, msg.description, (1, 2), 1))
        send(sender, to, call_id, payload)

    wire.send = downgrade  # type: ignore[method-assign]
    a = alice.dial("bob")
    wire.run()
    assert ended(alice, a.call_id) == ev.EndCall(FailReason.UNSUPPORTED_VERSION)
    assert alice.sent(a.call_id) == ["offer", "error"]  # no reveal: the keys were never made
    assert ended(bob, a.call_id) == ev.EndCall(FailReason.REMOTE_ERROR, "unsupported_version")


def test_a_malformed_ml_kem_key_fails_the_call_as_a_bad_key(pair: Pair) -> None:
    wire, alice, bob = pair
    send = wire.send
    bad = b"\xff" * 1184  # coefficients not reduced mod q: FIPS 203's input check refuses it

    def corrupt(sender: str, to: str, call_id: bytes, payload: bytes) -> None:
        msg = m.decode(payload)
        if isinstance(msg, m.Offer):
            payload = m.encode(m.Offer(msg.commitment, msg.description, msg.versions, bad))
        send(sender, to, call_id, payload)

    wire.send = corrupt  # type: ignore[method-assign]
    assert len(encapsulation_key(b"\x00" * 64)) == len(bad)
    a = alice.dial("bob")
    wire.run()
    assert ended(bob, a.call_id) == ev.EndCall(FailReason.BAD_KEY)
    assert ended(alice, a.call_id) == ev.EndCall(FailReason.REMOTE_ERROR, "bad_key")
