"""Glare, busy and routing decisions across calls (pure)."""

from __future__ import annotations

import pytest

from voice.call import messages as m
from voice.call import routing as ph
from voice.call.events import Role, State

HIGH, LOW, OTHER = b"\xf0" * 16, b"\x0f" * 16, b"\x55" * 16


def call(call_id: bytes, peer: str, role: Role, state: State) -> ph.CallInfo:
    return ph.CallInfo(call_id, peer, role, state)


def test_no_calls_answer() -> None:
    assert ph.decide_offer([], peer="bob", call_id=HIGH) == ph.Answer()


@pytest.mark.parametrize("state", [State.DIALING, State.RINGING_OUT])
def test_glare_larger_call_id_wins_on_both_sides(state: State) -> None:
    # alice dialed bob with HIGH, bob dialed alice with LOW; each sees the other's offer
    alice = [call(HIGH, "bob", Role.CALLER, state)]
    bob = [call(LOW, "alice", Role.CALLER, state)]
    assert ph.decide_offer(alice, peer="bob", call_id=LOW) == ph.IgnoreOffer()
    assert ph.decide_offer(bob, peer="alice", call_id=HIGH) == ph.LoseGlare(LOW)


def test_outgoing_call_to_someone_else_means_busy() -> None:
    calls = [call(HIGH, "carol", Role.CALLER, State.DIALING)]
    assert ph.decide_offer(calls, peer="bob", call_id=LOW) == ph.AnswerBusy()


@pytest.mark.parametrize(
    "state", [State.OFFERED, State.RINGING_IN, State.CONNECTING, State.CONNECTED]
)
def test_any_other_live_call_means_busy(state: State) -> None:
    calls = [call(OTHER, "carol", Role.CALLEE, state)]
    assert ph.decide_offer(calls, peer="bob", call_id=HIGH) == ph.AnswerBusy()


def test_connected_call_with_the_same_peer_is_not_glare() -> None:
    calls = [call(LOW, "bob", Role.CALLER, State.CONNECTED)]
    assert ph.decide_offer(calls, peer="bob", call_id=HIGH) == ph.AnswerBusy()


def test_ended_calls_do_not_make_busy_but_their_ids_stay_burnt() -> None:
    calls = [call(OTHER, "carol", Role.CALLER, State.ENDED)]
    assert ph.decide_offer(calls, peer="bob", call_id=HIGH) == ph.Answer()
    assert isinstance(ph.decide_offer(calls, peer="carol", call_id=OTHER), ph.Reject)


def test_malformed_call_id_rejected() -> None:
    assert isinstance(ph.decide_offer([], peer="bob", call_id=b"short"), ph.Reject)


def test_routing() -> None:
    calls = [call(HIGH, "bob", Role.CALLEE, State.RINGING_IN)]
    hangup = m.Hangup()
    assert ph.route_message(calls, peer="bob", call_id=HIGH, message=hangup) == ph.Deliver()
    assert ph.route_message(calls, peer="eve", call_id=HIGH, message=hangup) == ph.Reject(
        "call belongs to another peer"
    )
    assert ph.route_message(calls, peer="bob", call_id=LOW, message=hangup) == ph.Reject(
        "unknown call id"
    )
    offer = m.Offer(b"\x00" * 32, {})
    assert ph.route_message(calls, peer="bob", call_id=HIGH, message=offer) == ph.Reject(
        "offer for a call id we already know"
    )


def test_dial_decisions() -> None:
    assert ph.decide_dial([], peer="bob") == ph.Dial()
    ringing = [call(HIGH, "bob", Role.CALLEE, State.RINGING_IN)]
    assert ph.decide_dial(ringing, peer="bob") == ph.AcceptInstead(HIGH)
    assert ph.decide_dial(ringing, peer="carol") == ph.AlreadyInCall(HIGH)
    ended = [call(HIGH, "bob", Role.CALLEE, State.ENDED)]
    assert ph.decide_dial(ended, peer="bob") == ph.Dial()
