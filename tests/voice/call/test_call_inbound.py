"""The inbound decision, pure: a delivery in, actions out. Real envelopes, no sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voice.call import inbound as ib
from voice.call import messages as m
from voice.call.events import BadMessage, Role, State
from voice.call.outbound import CallSealer
from voice.crypto.contacts import ContactBook, KeySource
from voice.crypto.identity import Identity
from voice.crypto.replay import ReplayGuard

NOW = 1_700_000_000.0
OFFER = m.Offer(os.urandom(32), {"ice": "x"})


class Bob:
    def __init__(self, home: Path) -> None:
        self.identity = Identity.generate()
        self.contacts = ContactBook(home / "contacts.json")
        self.now = NOW
        self.inbound = ib.Inbound(self.identity, self.contacts, ReplayGuard(clock=self.clock))
        self.calls: list[ib.CallView] = []

    def clock(self) -> float:
        return self.now

    def receive(self, sender: str, body: bytes) -> list[ib.Action]:
        return self.inbound.receive(self.calls, sender, body)


@pytest.fixture
def bob(tmp_path: Path) -> Bob:
    return Bob(tmp_path)


def sealer(sender: Identity, bob: Bob, call_id: bytes) -> CallSealer:
    return CallSealer(sender, bob.identity.public_key, call_id, bob.clock)


def test_an_offer_from_a_new_contact_pins_its_key_starts_a_call_and_is_journaled(bob: Bob) -> None:
    alice, cid = Identity.generate(), os.urandom(16)
    actions = bob.receive("alice", sealer(alice, bob, cid).seal(OFFER))
    journal, start = actions
    assert isinstance(journal, ib.SaveJournal) and journal.entry[:2] == (alice.public_key, cid)
    assert journal.entry[3] is False  # a stranger: the unsolicited pool
    assert start == ib.StartCall(cid, "alice", alice.public_key, OFFER, private_ice=True)
    contact = bob.contacts.get("alice")
    assert contact is not None and contact.public_key == alice.public_key
    assert contact.introduced is KeySource.OFFER and not contact.solicited


def test_a_replayed_or_stale_envelope_is_dropped(bob: Bob) -> None:
    alice, cid = Identity.generate(), os.urandom(16)
    body = sealer(alice, bob, cid).seal(OFFER)
    assert isinstance(bob.receive("alice", body)[-1], ib.StartCall)
    assert bob.receive("alice", body) == [ib.Drop("bad_envelope")]  # the same envelope again
    late = sealer(alice, bob, os.urandom(16)).seal(OFFER)
    bob.now += 61  # older than the replay guard's 60 s
    assert bob.receive("alice", late) == [ib.Drop("bad_envelope")]


def test_an_offer_under_a_changed_key_never_rings_and_warns_once(bob: Bob) -> None:
    alice = Identity.generate()
    bob.contacts.check("alice", alice.public_key)
    mallory, cid = Identity.generate(), os.urandom(16)
    body = sealer(mallory, bob, cid).seal(OFFER)
    actions = bob.receive("alice", body)
    assert actions[0] == ib.Drop("key_changed") and isinstance(actions[1], ib.Warn)
    assert actions[1].warning.user == "alice" and len(actions) == 2
    assert bob.inbound.refused_offers == 1
    again = sealer(mallory, bob, cid).seal(OFFER)  # same call id, fresh envelope: no new warning
    assert bob.receive("alice", again) == [ib.Drop("key_changed")]


def test_in_a_live_call_another_key_under_the_peers_name_cannot_touch_the_call(bob: Bob) -> None:
    alice, cid = Identity.generate(), os.urandom(16)
    bob.contacts.check("alice", alice.public_key)
    bob.calls = [ib.CallView(cid, "alice", alice.public_key, Role.CALLEE, State.RINGING_IN)]
    genuine = sealer(alice, bob, cid).seal(m.Hangup())
    assert bob.receive("alice", genuine)[-1] == ib.Post(cid, m.Hangup())  # control: the peer can
    forged = sealer(Identity.generate(), bob, cid).seal(m.Hangup())
    actions = bob.receive("alice", forged)
    assert actions[0] == ib.Drop("key_changed")
    assert not any(isinstance(a, ib.Post) for a in actions)


def test_garbage_from_the_live_peer_fails_its_call_and_from_others_is_dropped(bob: Bob) -> None:
    alice, carol, cid = Identity.generate(), Identity.generate(), os.urandom(16)
    bob.contacts.check("alice", alice.public_key)
    bob.calls = [ib.CallView(cid, "alice", alice.public_key, Role.CALLEE, State.RINGING_IN)]
    actions = bob.receive("alice", sealer(alice, bob, cid).seal_payload(b"{not json"))
    assert actions[-2:] == [ib.Drop("bad_message"), ib.Post(cid, BadMessage())]
    actions = bob.receive("carol", sealer(carol, bob, cid).seal_payload(b"{not json"))
    assert actions[-1] == ib.Drop("bad_message")
    assert not any(isinstance(a, ib.Post) for a in actions)


def test_an_offer_while_in_another_call_gets_busy(bob: Bob) -> None:
    alice, carol = Identity.generate(), Identity.generate()
    live = os.urandom(16)
    bob.calls = [ib.CallView(live, "alice", alice.public_key, Role.CALLEE, State.CONNECTED)]
    cid = os.urandom(16)
    actions = bob.receive("carol", sealer(carol, bob, cid).seal(OFFER))
    assert actions[-1] == ib.SendBusy(cid, "carol", carol.public_key)


def test_glare_the_smaller_call_id_is_replaced_by_the_peers_offer(bob: Bob) -> None:
    alice = Identity.generate()
    ours, theirs = b"\x01" * 16, b"\xff" * 16
    bob.contacts.check("alice", alice.public_key)
    bob.calls = [ib.CallView(ours, "alice", alice.public_key, Role.CALLER, State.DIALING)]
    actions = bob.receive("alice", sealer(alice, bob, theirs).seal(OFFER))
    glare = ib.StartCall(theirs, "alice", alice.public_key, OFFER, replaces=ours, private_ice=True)
    assert actions[-1] == glare  # pinned by our own lookup, but never verified: still private


def test_in_a_connected_call_only_a_crossing_cancel_may_come_identity_sealed(bob: Bob) -> None:
    """Audit finding 10 and the race it must not break: the caller switches to the call's key
    when the accept arrives, so its cancel may cross our accept identity-sealed."""
    alice, cid = Identity.generate(), os.urandom(16)
    bob.contacts.check("alice", alice.public_key)
    view = ib.CallView(cid, "alice", alice.public_key, Role.CALLEE, State.CONNECTED)
    alice_sealer = CallSealer(alice, bob.identity.public_key, cid, bob.clock)
    bob.calls = [view]
    assert bob.receive("alice", alice_sealer.seal(m.Hangup())) == [ib.Drop("identity_sealed")]
    just_connected = ib.CallView(
        cid, "alice", alice.public_key, Role.CALLEE, State.CONNECTED, connected_for=0.2
    )
    bob.calls = [just_connected]
    assert bob.receive("alice", alice_sealer.seal(m.Cancel()))[-1] == ib.Post(cid, m.Cancel())
    late = ib.CallView(
        cid, "alice", alice.public_key, Role.CALLEE, State.CONNECTED, connected_for=6.0
    )
    bob.calls = [late]
    assert bob.receive("alice", alice_sealer.seal(m.Cancel())) == [ib.Drop("identity_sealed")]


def test_an_identity_sealed_accept_is_refused(bob: Bob) -> None:
    """An honest callee seals its accept with the call's key: a thief of its identity key
    cannot make the caller connect while the callee still rings."""
    alice, cid = Identity.generate(), os.urandom(16)
    bob.contacts.check("alice", alice.public_key)
    bob.calls = [ib.CallView(cid, "alice", alice.public_key, Role.CALLER, State.RINGING_OUT)]
    forged = sealer(alice, bob, cid).seal(m.Accept())
    assert bob.receive("alice", forged) == [ib.Drop("identity_sealed")]


def test_a_busy_answered_offer_stays_refused_after_strangers_evict_its_replay_entry(
    bob: Bob,
) -> None:
    """The unsolicited pool evicts; the memory of answered offers does not forget so soon."""
    alice, carol = Identity.generate(), Identity.generate()
    live = os.urandom(16)
    bob.contacts.check("carol", carol.public_key)
    bob.calls = [ib.CallView(live, "carol", carol.public_key, Role.CALLEE, State.CONNECTED)]
    offer = sealer(alice, bob, os.urandom(16)).seal(OFFER)
    assert isinstance(bob.receive("alice", offer)[-1], ib.SendBusy)
    for i in range(300):  # strangers' offers, all answered busy: the pool evicts alice's entry
        bob.receive(f"x{i}", sealer(Identity.generate(), bob, os.urandom(16)).seal(OFFER))
    assert len(bob.inbound.replay) <= 256
    bob.calls = []  # carol's call ended: an offer would ring now
    assert bob.receive("alice", offer) == [ib.Drop("offer_for_a_call_id_we_already_know")]


@pytest.mark.parametrize(("state", "moves"), [(State.RINGING_IN, False), (State.CONNECTED, True)])
def test_a_stranger_s_call_leaves_the_evicting_memory_only_once_taken(
    tmp_path: Path, state: State, moves: bool
) -> None:
    """A stranger's call keys exist while our phone still rings (it derives them from its
    reveal): a call-keyed cancel then must not move the call where nothing is evicted, or
    strangers ringing and cancelling would fill that memory and refuse every contact's call.
    Once our user took the call, it moves (a flood of strangers must not evict it)."""
    me = Identity.generate()
    guard = ReplayGuard(clock=lambda: NOW)
    inbound = ib.Inbound(me, ContactBook(tmp_path / "contacts.json"), guard)
    mallory, call_id = Identity.generate(), os.urandom(16)
    sealer = CallSealer(mallory, me.public_key, call_id, lambda: NOW)
    assert isinstance(inbound.receive([], "mallory", sealer.seal(OFFER))[-1], ib.StartCall)
    key = os.urandom(32)
    view = ib.CallView(call_id, "mallory", mallory.public_key, Role.CALLEE, state, open_key=key)
    sealer.use_call_key(key)
    assert isinstance(inbound.receive([view], "mallory", sealer.seal(m.Cancel()))[-1], ib.Post)
    entry = guard.entry(mallory.public_key, call_id)
    assert entry is not None and entry[3] is moves  # True: in the pool that never evicts
