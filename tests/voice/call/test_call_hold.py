"""Hold and resume in the pure core: the epoch rules, the machine's guards, and two phones wired
through the real envelopes (replayed, reordered, forged and misrouted hold messages)."""

from __future__ import annotations

import pytest

from tests.voice.call.call_harness import FakePhone, Pair, connected, ringing
from voice.call import events as ev
from voice.call import messages as m
from voice.call.events import HoldState, Role, State
from voice.call.hold import HoldControl, HoldRefused
from voice.call.machine import CallMachine
from voice.call.outbound import CallSealer


def hold_changes(phone: FakePhone, call_id: bytes) -> list[HoldState]:
    return [e.state for e in phone.effects(call_id) if isinstance(e, ev.HoldChanged)]


# ---- the epoch rules alone -------------------------------------------------------------------


def test_our_changes_are_numbered_and_a_change_that_changes_nothing_is_refused() -> None:
    hold = HoldControl()
    assert hold.user(True) == m.Hold(1)
    with pytest.raises(HoldRefused, match="already on hold"):
        hold.user(True)
    assert hold.user(False) == m.Resume(2)
    with pytest.raises(HoldRefused, match="not holding"):
        hold.user(False)
    assert hold.state == HoldState() and hold.sent_epoch == 2


def test_only_a_newer_epoch_of_the_peer_is_taken() -> None:
    hold = HoldControl()
    assert hold.receive(m.Hold(3)) is True and hold.state == HoldState(remote=True)
    for stale in (m.Hold(3), m.Resume(3), m.Resume(2), m.Hold(1)):
        with pytest.raises(HoldRefused, match="stale"):
            hold.receive(stale)
    assert hold.state == HoldState(remote=True) and hold.seen_epoch == 3
    assert hold.receive(m.Hold(4)) is False  # the resume between was lost: still held, taken
    assert hold.receive(m.Resume(9)) is True and hold.state == HoldState()


def test_our_changes_are_bounded() -> None:
    hold = HoldControl(max_epoch=1)
    hold.user(True)
    with pytest.raises(HoldRefused, match="no hold changes left"):
        hold.user(False)
    assert hold.state == HoldState(local=True)


# ---- the machine -----------------------------------------------------------------------------


def test_hold_outside_a_connected_call_is_refused_and_changes_nothing(pair: Pair) -> None:
    _, alice, _ = pair
    a = alice.dial("bob")  # DIALING
    for item in (ev.UserHold(), ev.UserResume()):
        step = a.handle(0.0, item)
        assert not step.ok and "makes no sense in DIALING" in (step.rejected or "")
    for message in (m.Hold(1), m.Resume(2)):
        assert not a.receive(0.0, a.call_id, message).ok
    assert a.state is State.DIALING and a.hold == HoldState()
    idle = CallMachine(role=Role.CALLEE, peer="alice", call_id=bytes(16))
    assert not idle.receive(0.0, bytes(16), m.Hold(1)).ok and idle.state is State.IDLE


def test_hold_and_resume_reach_the_peer_and_either_may_hold(pair: Pair) -> None:
    wire, alice, bob = pair
    a, b = connected(pair)
    step = alice.do(a, ev.UserHold())
    assert step.effects == (ev.HoldChanged(HoldState(local=True)), ev.SendMessage(m.Hold(1)))
    wire.run()
    assert (a.hold, b.hold) == (HoldState(local=True), HoldState(remote=True))
    bob.do(b, ev.UserHold())  # both hold
    wire.run()
    assert (a.hold, b.hold) == (HoldState(True, True), HoldState(True, True))
    alice.do(a, ev.UserResume())
    wire.run()
    assert a.hold.held and b.hold.held  # bob still holds: nobody plays anything yet
    bob.do(b, ev.UserResume())
    wire.run()
    assert a.hold == b.hold == HoldState()
    assert hold_changes(bob, b.call_id) == [
        HoldState(remote=True),
        HoldState(True, True),
        HoldState(local=True),
        HoldState(),
    ]
    assert (a.state, b.state) == (State.CONNECTED, State.CONNECTED)
    assert alice.rejected == bob.rejected == []


def test_a_replayed_hold_is_refused_and_the_call_stays_resumed(pair: Pair) -> None:
    wire, alice, bob = pair
    a, b = connected(pair)
    alice.do(a, ev.UserHold())
    hold = wire.queue[0]
    wire.run()
    alice.do(a, ev.UserResume())
    wire.run()
    assert b.hold == HoldState()
    wire.queue.append(hold)  # the server delivers the hold again
    wire.run()
    assert bob.rejected == ["bad_envelope"]  # the replay guard: the same seq again
    assert b.hold == HoldState() and b.state is State.CONNECTED


def test_a_hold_held_back_and_delivered_after_the_resume_cannot_flip_the_state(
    pair: Pair,
) -> None:
    """The replay guard lets a reordered envelope in (within its window): the epoch must not."""
    wire, alice, bob = pair
    a, b = connected(pair)
    alice.do(a, ev.UserHold())
    alice.do(a, ev.UserResume())
    hold, resume = wire.queue.popleft(), wire.queue.popleft()
    wire.queue.extend([resume, hold])  # the server swaps them
    wire.run()
    assert bob.rejected == ["hold epoch 1 is stale (replay or reorder)"]
    assert b.hold == HoldState() and b.state is State.CONNECTED
    assert hold_changes(bob, b.call_id) == []  # the resume changed nothing: never held


def test_an_identity_sealed_hold_is_refused(pair: Pair) -> None:
    """A thief of alice's identity key cannot put bob's call on hold (it lacks the call key)."""
    wire, alice, bob = pair
    a, b = connected(pair)
    forged = CallSealer(alice.identity, bob.identity.public_key, a.call_id, wire.clock)
    for _ in range(10):  # past the seqs alice used
        forged.seal(m.Hangup())
    bob.on_envelope("alice", forged.seal(m.Hold(1)))
    assert bob.rejected == ["identity_sealed"]
    assert b.hold == HoldState() and b.state is State.CONNECTED


def test_hold_for_an_unknown_call_or_from_another_party_is_dropped(pair: Pair) -> None:
    wire, alice, bob = pair
    carol = wire.add("carol")
    bob.contacts.check("carol", carol.identity.public_key)  # someone bob knows
    a, b = connected(pair)
    wire.send("carol", "bob", a.call_id, m.encode(m.Hold(1)))  # not in the call
    wire.send("alice", "bob", b"\x00" * 16, m.encode(m.Hold(1)))  # no such call
    wire.run()
    assert bob.rejected == ["call_belongs_to_another_peer", "unknown_call_id"]
    assert b.hold == HoldState() and b.state is State.CONNECTED
    alice.do(a, ev.UserHold())  # the real peer still can
    wire.run()
    assert b.hold == HoldState(remote=True)


def test_a_call_sealed_hold_before_the_call_connected_is_refused(pair: Pair) -> None:
    """The callee has the call's keys while it rings; a hold from it then is refused, and the
    call goes on to connect."""
    wire, alice, bob = pair
    a, b = ringing(pair)
    wire.send("bob", "alice", a.call_id, m.encode(m.Hold(1)))
    wire.run()
    assert alice.rejected == ["Hold makes no sense in RINGING_OUT"]
    assert a.state is State.RINGING_OUT and a.hold == HoldState()
    bob.do(b, ev.UserAccept())
    wire.run()
    assert (a.state, b.state) == (State.CONNECTED, State.CONNECTED)
    assert a.hold == HoldState()


def test_hold_ends_with_the_call(pair: Pair) -> None:
    wire, alice, bob = pair
    a, b = connected(pair)
    alice.do(a, ev.UserHold())
    wire.run()
    bob.do(b, ev.UserHangup())
    wire.run()
    assert a.state is State.ENDED and b.state is State.ENDED
    assert not a.handle(0.0, ev.UserResume()).ok
    assert not b.receive(0.0, b.call_id, m.Resume(2)).ok
