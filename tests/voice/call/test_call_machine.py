"""The state machine alone: every table transition, rejections, invariants under random input."""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.call import events as ev
from voice.call import messages as m
from voice.call.events import EndReason, FailReason, Role, State
from voice.call.machine import SENT_BY, TABLE, CallMachine, transitions

CALL_ID = bytes(range(16))
K = b"\x07" * 32
C = b"\x08" * 64  # continuity field
DESC: dict[str, Any] = {"ice": {"ufrag": "abcd", "candidates": ["c"]}}
OFFER = m.Offer(K, DESC)
RINGING = m.Ringing(K, C, DESC)
PRIVATE = {"ice": {"ufrag": "abcd", "candidates": []}}  # a callee's ringing to a stranger
RINGING_PRIVATE = m.Ringing(K, C, PRIVATE)
REVEAL = m.Reveal(K, C)
LATE = 1e9

INPUTS: list[tuple[str, Any, float]] = [  # (name, input, now)
    ("UserDial", ev.UserDial(OFFER, REVEAL), 0.0),
    ("RingingReady", ev.RingingReady(RINGING), 0.0),
    ("RingingReady", ev.RingingReady(RINGING_PRIVATE), 0.0),
    ("UserAccept", ev.UserAccept(), 0.0),
    ("UserDecline", ev.UserDecline(), 0.0),
    ("UserHangup", ev.UserHangup(), 0.0),
    ("GlareLost", ev.GlareLost(), 0.0),
    ("KeysReady", ev.KeysReady(), 0.0),
    ("CommitmentMismatch", ev.CommitmentMismatch(), 0.0),
    ("BadKey", ev.BadKey(), 0.0),
    ("KeyChanged", ev.KeyChanged(), 0.0),
    ("BadMessage", ev.BadMessage(), 0.0),
    ("IceConnected", ev.IceConnected(), 0.0),
    ("IceFailed", ev.IceFailed(), 0.0),
    ("MediaFailed", ev.MediaFailed(), 0.0),
    ("PeerVanished", ev.PeerVanished(), 0.0),
    ("SignalingLost", ev.SignalingLost(), 0.0),
    ("Tick", ev.Tick(), 1.0),
    ("Tick", ev.Tick(), LATE),
    ("Offer", OFFER, 0.0),
    ("Ringing", RINGING, 0.0),
    ("Ringing", RINGING_PRIVATE, 0.0),
    ("Ice", m.Ice(0, {"candidates": ["c"]}), 0.0),
    ("Ice", m.Ice(1, {"candidates": ["c"], "ufrag": "efgh", "pwd": "p" * 22}), 0.0),
    ("MediaFlowing", ev.MediaFlowing(), 0.0),
    ("MediaLost", ev.MediaLost(30.0), 0.0),
    ("PeerHungUp", ev.PeerHungUp(), 0.0),
    ("Reveal", REVEAL, 0.0),
    ("Accept", m.Accept(), 0.0),
    ("Decline", m.Decline(), 0.0),
    ("Busy", m.Busy(), 0.0),
    ("Cancel", m.Cancel(), 0.0),
    ("Hangup", m.Hangup(), 0.0),
    ("CallError", m.CallError("ice_failed"), 0.0),
    ("UserHold", ev.UserHold(), 0.0),
    ("UserResume", ev.UserResume(), 0.0),
    ("Hold", m.Hold(1), 0.0),
    ("Resume", m.Resume(2), 0.0),
]
HOLD_CHANGES = 2  # our own hold changes per call in the exploration (keeps it finite)


def feed(machine: CallMachine, item: Any, now: float) -> ev.Step:
    if type(item) in SENT_BY:
        return machine.receive(now, CALL_ID, item)
    return machine.handle(now, item)


def fresh(role: Role) -> CallMachine:
    return CallMachine(role=role, peer="peer", call_id=CALL_ID, max_hold_changes=HOLD_CHANGES)


def explore() -> tuple[set[tuple[str, str, str]], int]:
    """Breadth-first over every reachable configuration of both roles with every input."""
    seen_transitions: set[tuple[str, str, str]] = set()
    seen: set[tuple[Any, ...]] = set()
    queue = deque([fresh(Role.CALLER), fresh(Role.CALLEE)])
    rejections = 0
    while queue:
        machine = queue.popleft()
        for name, item, now in INPUTS:
            trial = copy.deepcopy(machine)
            before = copy.deepcopy(vars(trial))
            step = feed(trial, item, now)
            if not step.ok:
                assert vars(trial) == before, (machine.state, name)  # untouched
                rejections += 1
                continue
            assert step.state is trial.state
            if (machine.state, type(item)) in TABLE:
                seen_transitions.add((machine.state.name, name, trial.state.name))
            key = (trial.role, *(repr(v) for v in vars(trial).values()))
            if key not in seen:
                seen.add(key)
                queue.append(trial)
    return seen_transitions, rejections


def test_every_table_transition_is_reachable_and_nothing_else_happens() -> None:
    observed, rejections = explore()
    assert observed == transitions()
    assert rejections > 0


def test_terminal_states_reject_everything_but_ticks() -> None:
    machine = fresh(Role.CALLER)
    machine.handle(0.0, ev.UserDial(OFFER, REVEAL))
    machine.handle(0.0, ev.UserHangup())
    for name, item, now in INPUTS:
        step = feed(machine, item, now)
        assert step.effects == ()
        assert step.ok == (name == "Tick"), name
        assert machine.state is State.ENDED


def test_wrong_call_id_and_wrong_direction_are_rejected() -> None:
    caller = fresh(Role.CALLER)
    caller.handle(0.0, ev.UserDial(OFFER, REVEAL))
    assert caller.receive(0.0, b"\x01" * 16, RINGING).rejected == "unknown call id"
    assert not caller.receive(0.0, CALL_ID, OFFER).ok  # a caller never gets an offer
    assert not caller.receive(0.0, CALL_ID, m.Cancel()).ok
    callee = fresh(Role.CALLEE)
    assert not callee.receive(0.0, CALL_ID, RINGING).ok
    assert not callee.handle(0.0, ev.UserDial(OFFER, REVEAL)).ok  # only a caller dials
    assert (caller.state, callee.state) == (State.DIALING, State.IDLE)


def test_second_offer_and_second_reveal_are_rejected() -> None:
    callee = fresh(Role.CALLEE)
    assert callee.receive(0.0, CALL_ID, OFFER).ok
    assert not callee.receive(0.0, CALL_ID, OFFER).ok
    callee.handle(0.0, ev.RingingReady(RINGING))
    assert callee.receive(0.0, CALL_ID, REVEAL).effects == (ev.DeriveKeys(K, C, DESC),)
    step = callee.receive(0.0, CALL_ID, REVEAL)
    assert step.rejected == "second reveal" and callee.state is State.RINGING_IN


def test_accept_while_idle_and_keys_ready_before_asked_are_rejected() -> None:
    callee = fresh(Role.CALLEE)
    assert not callee.handle(0.0, ev.UserAccept()).ok
    callee.receive(0.0, CALL_ID, OFFER)
    callee.handle(0.0, ev.RingingReady(RINGING))
    assert callee.handle(0.0, ev.KeysReady()).rejected == "no key agreement is pending"
    assert not callee.keys_ready


def test_messages_are_not_local_events_and_junk_is_rejected() -> None:
    machine = fresh(Role.CALLEE)
    junk: Any = "accept"
    offer: Any = OFFER
    assert not machine.handle(0.0, offer).ok
    assert not machine.handle(0.0, junk).ok
    assert not machine.receive(0.0, CALL_ID, junk).ok
    assert machine.state is State.IDLE


@pytest.mark.parametrize("ice", [None, ["x"], "x"])
def test_candidates_for_a_ringing_without_ice_parameters_are_refused(ice: Any) -> None:
    """A peer's ringing is committed, not checked: one without an ``ice`` object, then its
    candidates, is refused (the call goes on to its deadline), never an exception."""
    caller = fresh(Role.CALLER)
    caller.handle(0.0, ev.UserDial(OFFER, REVEAL))
    hostile = m.Ringing(K, C, {"codec": 1} if ice is None else {"ice": ice})
    assert caller.receive(0.0, CALL_ID, hostile).ok
    assert caller.handle(0.0, ev.KeysReady()).ok
    assert caller.receive(0.0, CALL_ID, m.Accept()).ok
    step = caller.receive(0.0, CALL_ID, m.Ice(0, {"candidates": ["c"]}))
    assert step.rejected == "candidates for a description without ICE parameters"
    assert caller.state is State.CONNECTED and step.effects == ()


def test_caller_effects_along_the_happy_path() -> None:
    a = fresh(Role.CALLER)
    assert a.handle(0.0, ev.UserDial(OFFER, REVEAL)).effects == (ev.SendMessage(OFFER),)
    assert a.deadline == 25.0  # ringing must come back soon: ring_timeout
    assert a.receive(1.0, CALL_ID, RINGING).effects == (
        ev.DeriveKeys(K, C, DESC),
        ev.StartIce(DESC),
        ev.Ringback(),
    )
    assert a.receive(1.0, CALL_ID, m.Accept()).rejected == "accept before our reveal"
    assert a.handle(1.0, ev.KeysReady()).effects == (ev.SendMessage(REVEAL),)
    step = a.receive(2.0, CALL_ID, m.Accept())
    assert step.effects == (ev.StopRinging(), ev.StartMedia())
    assert a.deadline == 22.0  # the first authenticated packet must come by then
    assert a.handle(2.5, ev.MediaFlowing()).effects == (ev.ShowSas(),)
    assert a.deadline is None
    assert a.handle(3.0, ev.UserHangup()).effects == (
        ev.SendMessage(m.Hangup()),
        ev.StopMedia(),
        ev.EndCall(EndReason.HANGUP_LOCAL),
    )


def test_callee_effects_along_the_happy_path() -> None:
    b = fresh(Role.CALLEE)
    assert b.receive(0.0, CALL_ID, OFFER).effects == (ev.PrepareRinging(OFFER),)
    assert b.handle(0.0, ev.RingingReady(RINGING)).effects == (
        ev.SendMessage(RINGING),
        ev.StartIce(DESC),
        ev.Ring(),
    )
    assert b.handle(1.0, ev.UserAccept()).effects == (ev.StopRinging(),)  # before the reveal: wait
    assert b.state is State.CONNECTING and b.deadline == 21.0
    b.receive(1.5, CALL_ID, REVEAL)
    assert b.handle(1.5, ev.KeysReady()).effects == (ev.SendMessage(m.Accept()), ev.StartMedia())
    assert b.receive(2.0, CALL_ID, m.CallError("media_failed")).effects == (
        ev.StopMedia(),
        ev.EndCall(FailReason.REMOTE_ERROR, "media_failed"),
    )


# ---- random sequences ------------------------------------------------------------------------

_junk: list[Any] = ["hangup", None, 42, object(), ev.Step(State.IDLE)]
_items = st.one_of(
    st.sampled_from(INPUTS).map(lambda t: (t[1], True)),
    st.sampled_from(_junk).map(lambda j: (j, False)),
    st.just((m.Hangup(), False)),  # with a wrong call id
)


@settings(max_examples=400, deadline=None)
@given(
    role=st.sampled_from(Role),
    script=st.lists(st.tuples(_items, st.floats(0.0, 30.0)), max_size=40),
)
def test_invariants_hold_under_random_input(
    role: Role, script: list[tuple[tuple[Any, bool], float]]
) -> None:
    machine = fresh(role)
    now = 0.0
    keys = accepted = media = ended = False
    for (item, good), dt in script:
        now += dt
        was = machine.state
        if not good and item == m.Hangup():
            step = machine.receive(now, b"\xee" * 16, item)
        elif type(item) in SENT_BY:
            step = machine.receive(now, CALL_ID, item)
        else:
            step = machine.handle(now, item)
        if was.terminal:
            assert machine.state is was and step.effects == ()
        if not step.ok:
            assert machine.state is was and step.effects == ()
            continue
        keys = keys or isinstance(item, ev.KeysReady)
        accepted = accepted or isinstance(item, ev.UserAccept | m.Accept)
        for effect in step.effects:
            if isinstance(effect, ev.StartMedia):
                assert keys and accepted and not media
                media = True
            if isinstance(effect, ev.StopMedia):
                assert media
            if isinstance(effect, ev.SendMessage):
                assert SENT_BY[type(effect.message)] in (role, None)
        ends = [e for e in step.effects if isinstance(e, ev.EndCall)]
        assert bool(ends) == (machine.state.terminal and not was.terminal)
        if ends:
            assert step.effects[-1] is ends[0] and not ended
            ended = True
            assert ends[0].failed == (machine.state is State.FAILED)
            assert media == any(isinstance(e, ev.StopMedia) for e in step.effects)


def test_every_rule_names_a_machine_method() -> None:
    for rule in TABLE.values():
        assert callable(getattr(CallMachine, rule.handler, None)), rule.handler


def test_losing_signaling_fails_a_call_in_setup_but_not_a_connected_one() -> None:
    a = fresh(Role.CALLER)
    a.handle(0.0, ev.UserDial(OFFER, REVEAL))
    a.receive(1.0, CALL_ID, RINGING)
    step = a.handle(1.0, ev.SignalingLost())
    assert step.effects == (ev.StopRinging(), ev.EndCall(FailReason.SIGNALING_LOST))
    assert a.state is State.FAILED  # and nothing is sent: there is no server to send it
    b = fresh(Role.CALLEE)
    b.receive(0.0, CALL_ID, OFFER)
    b.handle(0.0, ev.RingingReady(RINGING))
    b.receive(0.5, CALL_ID, REVEAL)
    b.handle(0.5, ev.KeysReady())
    b.handle(1.0, ev.UserAccept())
    assert b.state is State.CONNECTED
    step = b.handle(2.0, ev.SignalingLost())
    assert step.ok and step.effects == () and b.state is State.CONNECTED
    assert b.handle(3.0, ev.UserHangup()).effects[-1] == ev.EndCall(
        EndReason.HANGUP_LOCAL
    )  # still ours to end
