"""The key layer without any network: three members pass its messages by hand."""

from __future__ import annotations

import os

from voice.group import messages as gm
from voice.group.keylayer import KeyLayer, Outgoing
from voice.group.keys import OwnSender, SenderKey

GROUP = os.urandom(16)


def member(user: str, index: int) -> gm.Member:
    return gm.Member(user, os.urandom(32), index, os.urandom(32))


def settle(layers: dict[str, KeyLayer], outgoing: dict[str, Outgoing]) -> None:
    """Deliver every message (as the roster would, same epoch) until nothing is left."""
    while any(outgoing.values()):
        sender = next(user for user, out in outgoing.items() if out)
        to, message = outgoing[sender].pop(0)
        assert isinstance(message, gm.SenderKey | gm.Commit | gm.Reveal)
        outgoing[to] += layers[to].on_deliver(message, 0.0)


def epoch(
    layers: dict[str, KeyLayer],
    number: int,
    members: tuple[gm.Member, ...],
    joined: tuple[gm.Member, ...] = (),
    left: tuple[gm.Member, ...] = (),
) -> None:
    outgoing = {}
    for m in members:
        others = [o for o in members if o is not m]
        outgoing[m.user] = layers[m.user].on_membership(
            GROUP, number, members, others, joined, left, 0.0
        )
    settle(layers, outgoing)


def test_joins_and_a_leave_give_one_code_and_the_keys_the_design_says() -> None:
    alice, bob, carol = member("alice", 0), member("bob", 1), member("carol", 2)
    layers = {
        "alice": KeyLayer("alice", sender=OwnSender(SenderKey.fresh(0, 0))),
        "bob": KeyLayer("bob"),
        "carol": KeyLayer("carol"),
    }
    epoch(layers, 1, (alice, bob), joined=(bob,))
    assert layers["alice"].code is not None and layers["alice"].code == layers["bob"].code
    epoch(layers, 2, (alice, bob, carol), joined=(carol,))
    codes = {str(layers[u].code) for u in ("alice", "bob", "carol")}
    assert len(codes) == 1 and "None" not in codes
    bob_key = layers["bob"].sender
    assert bob_key is not None and bob_key.current.step == 1  # ratcheted for carol's join
    assert layers["carol"].peers.get(1) == bob_key.current  # carol got the ratcheted key only
    epoch(layers, 3, (alice, bob), left=(carol,))
    assert layers["alice"].code is not None and layers["alice"].code == layers["bob"].code
    assert bob_key.current.generation == 1  # a fresh key after the leave
    assert layers["carol"].peers.get(1) != bob_key.current  # which carol never got


def test_no_reveal_and_no_code_before_every_key_of_the_epoch() -> None:
    alice, bob = member("alice", 0), member("bob", 1)
    layers = {"alice": KeyLayer("alice", sender=OwnSender(SenderKey.fresh(0, 0)))}
    layers["bob"] = KeyLayer("bob")
    out_a = layers["alice"].on_membership(GROUP, 1, (alice, bob), [bob], (bob,), (), 0.0)
    out_b = layers["bob"].on_membership(GROUP, 1, (alice, bob), [alice], (bob,), (), 0.0)
    bob_key = next(m for _, m in out_b if isinstance(m, gm.SenderKey))
    outgoing = {"alice": out_a, "bob": [(t, m) for t, m in out_b if m is not bob_key]}
    settle(layers, outgoing)
    # alice holds every commit but not bob's key: she keeps her nonce, so nobody has a code
    assert layers["alice"].code is None and layers["bob"].code is None
    outgoing = {"alice": layers["alice"].on_deliver(bob_key, 0.0), "bob": []}
    assert any(isinstance(m, gm.Reveal) for _, m in outgoing["alice"])  # now she reveals
    settle(layers, outgoing)
    assert layers["alice"].code is not None and layers["alice"].code == layers["bob"].code


def test_a_key_changed_after_the_reveals_began_fails_the_code() -> None:
    """A member that could still pick its key once the nonces are out could grind the code
    (try keys until two transcripts give one code): the keys are fixed at our reveal."""
    alice, bob = member("alice", 0), member("bob", 1)
    layers = {"alice": KeyLayer("alice", sender=OwnSender(SenderKey.fresh(0, 0)))}
    layers["bob"] = KeyLayer("bob")
    out_a = layers["alice"].on_membership(GROUP, 1, (alice, bob), [bob], (bob,), (), 0.0)
    out_b = layers["bob"].on_membership(GROUP, 1, (alice, bob), [alice], (bob,), (), 0.0)
    bob_reveal: list[gm.Message] = []
    for to, message in out_a:  # alice's key and commit reach bob: he reveals
        bob_reveal += [m for _, m in layers[to].on_deliver(message, 0.0)]  # type: ignore[arg-type]
    for _, message in out_b:  # bob's key and commit reach alice: she reveals
        layers["alice"].on_deliver(message, 0.0)  # type: ignore[arg-type]
    later = SenderKey.fresh(1, 1)  # bob now hands alice another key (a new generation) ...
    layers["alice"].on_deliver(gm.SenderKey(GROUP, 1, 1, 1, 0, later.base_key), 0.0)
    for message in bob_reveal:  # ... and then his nonce
        layers["alice"].on_deliver(message, 0.0)  # type: ignore[arg-type]
    assert layers["alice"].code is None
    assert layers["alice"].failure is not None and "changed" in layers["alice"].failure


def test_a_key_of_the_previous_epoch_that_arrives_late_is_ratcheted_to_this_one() -> None:
    """carol and dave join close together: the keys carol sent for epoch 2 arrive once epoch 3
    (dave) has begun everywhere. Ratcheted forward as carol's own was, they still give everyone
    carol's current key and one code; the commits and reveals of epoch 2 are dropped, as the
    roster drops them."""
    names = ("alice", "bob", "carol", "dave")
    alice, bob, carol, dave = (member(n, i) for i, n in enumerate(names))
    layers = {"alice": KeyLayer("alice", sender=OwnSender(SenderKey.fresh(0, 0)))}
    layers |= {name: KeyLayer(name) for name in ("bob", "carol", "dave")}
    epoch(layers, 1, (alice, bob), joined=(bob,))
    two = (alice, bob, carol)
    late: Outgoing = []
    for m in two:  # epoch 2 begins; nothing of it is delivered yet
        out = layers[m.user].on_membership(
            GROUP, 2, two, [o for o in two if o is not m], (carol,), (), 0.0
        )
        late += [(to, msg) for to, msg in out if isinstance(msg, gm.SenderKey)]
    three = (*two, dave)
    outgoing = {
        m.user: layers[m.user].on_membership(
            GROUP, 3, three, [o for o in three if o is not m], (dave,), (), 0.0
        )
        for m in three
    }
    for to, message in late:  # epoch 2's keys, late, before anything of epoch 3
        outgoing[to] += layers[to].on_deliver(message, 0.0)
    settle(layers, outgoing)
    codes = {str(layers[u].code) for u in ("alice", "bob", "carol", "dave")}
    assert len(codes) == 1 and "None" not in codes, codes
    carol_key = layers["carol"].sender
    assert carol_key is not None and carol_key.current.step == 1
    assert layers["bob"].peers.get(2) == carol_key.current
    assert layers["alice"].peers.get(2) == carol_key.current


def test_a_join_does_not_make_a_key_still_awaited_after_a_leave_current() -> None:
    """carol leaves (everyone sends a fresh key of the next generation), then dave joins before
    bob's fresh key reaches alice: alice must not take bob's old-generation key, ratcheted, as
    his key of the new epoch (the code would bind the wrong key); the fresh one, when it comes,
    is ratcheted once and completes the round (bob's reveal waits for alice's fresh key alike)."""
    names = ("alice", "bob", "carol", "dave")
    alice, bob, carol, dave = (member(n, i) for i, n in enumerate(names))
    layers = {"alice": KeyLayer("alice", sender=OwnSender(SenderKey.fresh(0, 0)))}
    layers |= {name: KeyLayer(name) for name in ("bob", "carol", "dave")}
    epoch(layers, 1, (alice, bob), joined=(bob,))
    epoch(layers, 2, (alice, bob, carol), joined=(carol,))
    two = (alice, bob)
    out = layers["bob"].on_membership(GROUP, 3, two, [alice], (), (carol,), 0.0)
    out += layers["alice"].on_membership(GROUP, 3, two, [bob], (), (carol,), 0.0)
    fresh = [(to, m) for to, m in out if isinstance(m, gm.SenderKey)]  # delivered late
    three = (alice, bob, dave)
    outgoing = {
        m.user: layers[m.user].on_membership(
            GROUP, 4, three, [o for o in three if o is not m], (dave,), (), 0.0
        )
        for m in three
    }
    settle(layers, outgoing)
    assert layers["alice"].code is None and layers["alice"].failure is None  # still waiting
    bob_key = layers["bob"].sender
    assert bob_key is not None and bob_key.current.generation == 1
    outgoing = {"alice": [], "bob": [], "dave": []}
    for to, message in fresh:
        outgoing[to] += layers[to].on_deliver(message, 0.0)
    settle(layers, outgoing)
    assert layers["alice"].peers.get(1) == bob_key.current
    codes = {str(layers[u].code) for u in ("alice", "bob", "dave")}
    assert len(codes) == 1 and "None" not in codes, codes
