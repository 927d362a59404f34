"""Sender keys: KIDs, the ratchet on a join, a new generation on a leave, the grace period.

The security claims of docs/group-calls.md are tested as attacks: a newcomer with only the
keys it was given, a removed member that never gets the new generation.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.errors import SFrameError, StaleSenderKey, UnknownKeyId
from voice.group.keys import (
    GRACE_S,
    MAX_GENERATION,
    SUITE,
    OwnSender,
    PeerKeys,
    SenderKey,
    group_kid,
    parse_group_kid,
)
from voice.group.sframe import Header, SFrameReceiver, ratchet


def fake_random(seed: int = 1) -> tuple[SenderKey, OwnSender]:
    """A sender whose fresh keys are predictable: seed, seed+1, ... repeated over 32 bytes."""
    counter = itertools.count(seed)

    def randbytes(n: int) -> bytes:
        return bytes([next(counter)]) * n

    key = SenderKey.fresh(7, 0, randbytes=randbytes)
    return key, OwnSender(key, randbytes=randbytes)


def peers_holding(*keys: SenderKey, now: float = 0.0) -> PeerKeys:
    peers = PeerKeys()
    for key in keys:
        peers.install(key, now)
    return peers


# --- KIDs -------------------------------------------------------------------------------------


@given(st.integers(0, 255), st.integers(0, MAX_GENERATION), st.integers(0, 10_000))
def test_kid_round_trips(index: int, generation: int, step: int) -> None:
    kid = group_kid(index, generation, step)
    assert kid < 2**32
    assert parse_group_kid(kid) == (index, generation, step % 256)
    assert kid == (index << 24) | (generation << 8) | (step % 256)


def test_kid_layout() -> None:
    assert group_kid(0, 0, 0) == 0
    assert group_kid(1, 2, 3) == 0x01_0002_03
    assert group_kid(255, MAX_GENERATION, 255) == 2**32 - 1
    assert group_kid(9, 1, 256) == group_kid(9, 1, 0)  # only step mod 256 travels


@pytest.mark.parametrize(
    ("index", "generation", "step"),
    [(256, 0, 0), (-1, 0, 0), (0, 2**16, 0), (0, -1, 0), (0, 0, -1), (True, 0, 0)],
)
def test_kid_limits(index: int, generation: int, step: int) -> None:
    with pytest.raises(ValueError):
        group_kid(index, generation, step)


def test_parse_refuses_what_is_not_a_group_kid() -> None:
    with pytest.raises(ValueError):
        parse_group_kid(2**32)
    with pytest.raises(ValueError):
        parse_group_kid(-1)


# --- SenderKey --------------------------------------------------------------------------------


def test_sender_key_hides_its_key_and_checks_it() -> None:
    key = SenderKey(3, 1, 2, b"\xab" * 32)
    assert repr(key) == "SenderKey(index=3, generation=1, step=2)"
    with pytest.raises(ValueError):
        SenderKey(3, 1, 2, b"short")
    with pytest.raises(ValueError):
        SenderKey(256, 0, 0, bytes(32))


def test_ratcheted_is_the_sframe_ratchet_one_step_on() -> None:
    key = SenderKey(3, 1, 2, bytes(range(32)))
    nxt = key.ratcheted()
    assert (nxt.index, nxt.generation, nxt.step) == (3, 1, 3)
    assert nxt.base_key == ratchet(key.base_key, SUITE)
    assert nxt.kid == key.kid + 1


def test_fresh_uses_the_randomness_given() -> None:
    key = SenderKey.fresh(5, 4, randbytes=lambda n: b"\x11" * n)
    assert key == SenderKey(5, 4, 0, b"\x11" * 32)
    assert SenderKey.fresh(5, 4).base_key != SenderKey.fresh(5, 4).base_key


def test_commitment_binds_the_key_with_a_label() -> None:
    a = SenderKey(1, 0, 0, bytes(32))
    assert len(a.commitment()) == 32
    assert a.commitment() == SenderKey(2, 5, 9, bytes(32)).commitment()  # the key, not its place
    assert a.commitment() != SenderKey(1, 0, 0, b"\x01" + bytes(31)).commitment()
    assert a.commitment() != hashlib.sha256(bytes(32)).digest()


# --- OwnSender --------------------------------------------------------------------------------


def test_a_peer_opens_what_the_sender_seals() -> None:
    key, sender = fake_random()
    peers = peers_holding(key)
    assert peers.unprotect(sender.protect(b"hello"), 0.0) == (7, b"hello")


def test_on_join_ratchets_and_on_leave_starts_a_new_generation() -> None:
    key, sender = fake_random(seed=1)
    joined = sender.on_join()
    assert joined == key.ratcheted() == sender.current
    left = sender.on_leave()
    assert (left.index, left.generation, left.step) == (7, 1, 0)
    assert left.base_key == b"\x02" * 32  # the next randomness, not a ratchet
    assert sender.current == left


def test_kid_and_ctr_never_repeat_across_joins_and_leaves() -> None:
    _, sender = fake_random()
    seen: set[tuple[int, int]] = set()
    total = 0
    for change in range(200):
        for _ in range(5):
            header, _ = Header.decode(sender.protect(b"x"))
            seen.add((header.kid, header.ctr))
            total += 1
        if change % 50 == 49:
            sender.on_leave()
        else:
            sender.on_join()
    assert len(seen) == total


def test_after_256_joins_the_kid_returns_with_another_key() -> None:
    key, sender = fake_random()
    for _ in range(256):
        sender.on_join()
    assert sender.current.kid == key.kid
    assert sender.current.base_key != key.base_key  # so its key and salt, hence nonces, differ


def test_a_peer_follows_a_wrapping_step() -> None:
    key, sender = fake_random()
    peers = peers_holding(key)
    for step in range(300):
        now = step * 10.0
        sender.on_join()
        peers.ratchet_all(now)
        assert peers.unprotect(sender.protect(b"f"), now) == (7, b"f")
    assert peers.get(7) == sender.current


def test_a_ratchet_wrap_within_the_grace_period_replaces_the_old_kid() -> None:
    key, sender = fake_random()
    peers = peers_holding(key)
    for _ in range(256):
        sender.on_join()
        peers.ratchet_all(0.0)
    assert peers.unprotect(sender.protect(b"f"), 0.0) == (7, b"f")


# --- the security claims ----------------------------------------------------------------------


def test_a_newcomer_cannot_open_frames_from_before_it_joined() -> None:
    key, sender = fake_random()
    before = sender.protect(b"before the join")
    given_to_newcomer = sender.on_join()
    after = sender.protect(b"after the join")

    newcomer = peers_holding(given_to_newcomer)
    with pytest.raises(UnknownKeyId):
        newcomer.unprotect(before, 0.0)
    assert newcomer.unprotect(after, 0.0) == (7, b"after the join")

    # Even told the old KID, the newcomer's key does not open the old frame.
    forced = SFrameReceiver(SUITE)
    forced.add_key(key.kid, given_to_newcomer.base_key)
    with pytest.raises(SFrameError):
        forced.unprotect(before)


def test_a_removed_member_cannot_open_frames_after_it_left() -> None:
    key, sender = fake_random()
    removed = peers_holding(key)
    remaining = peers_holding(key)
    assert removed.unprotect(sender.protect(b"while a member"), 0.0)[1] == b"while a member"

    new_key = sender.on_leave()
    remaining.install(new_key, 1.0)  # the removed member never gets it
    after = sender.protect(b"after the leave")
    assert remaining.unprotect(after, 1.0) == (7, b"after the leave")
    with pytest.raises(UnknownKeyId):
        removed.unprotect(after, 1.0)
    removed.ratchet_all(1.0)  # nor does ratcheting what it had help
    with pytest.raises(UnknownKeyId):
        removed.unprotect(after, 1.0)


def test_old_keys_work_in_the_grace_period_only() -> None:
    key, sender = fake_random()
    peers = peers_holding(key)
    in_flight = [sender.protect(b"old %d" % i) for i in range(3)]
    sender.on_join()
    peers.ratchet_all(10.0)
    assert peers.unprotect(sender.protect(b"new"), 10.0) == (7, b"new")
    assert peers.unprotect(in_flight[0], 10.0) == (7, b"old 0")
    assert peers.unprotect(in_flight[1], 10.0 + GRACE_S - 0.01) == (7, b"old 1")
    with pytest.raises(UnknownKeyId):
        peers.unprotect(in_flight[2], 10.0 + GRACE_S)
    assert peers.kids == {sender.current.kid}


def test_expire_drops_keys_past_their_grace_after_a_new_generation() -> None:
    key, sender = fake_random()
    peers = peers_holding(key)
    old = sender.protect(b"old")
    peers.install(sender.on_leave(), 5.0)
    assert len(peers.kids) == 2
    peers.expire(5.0 + GRACE_S - 0.5)
    assert len(peers.kids) == 2
    peers.expire(5.0 + GRACE_S)
    assert peers.kids == {sender.current.kid}
    with pytest.raises(UnknownKeyId):
        peers.unprotect(old, 0.0)


def test_forget_drops_every_key_of_a_member_at_once() -> None:
    key, sender = fake_random()
    other = SenderKey(9, 0, 0, b"\x99" * 32)
    peers = peers_holding(key, other)
    old = sender.protect(b"old")
    sender.on_join()
    peers.ratchet_all(0.0)
    new = sender.protect(b"new")
    peers.forget(7)
    for frame in (old, new):
        with pytest.raises(UnknownKeyId):
            peers.unprotect(frame, 0.0)
    assert peers.get(7) is None
    assert peers.kids == {other.kid, other.ratcheted().kid}  # the other's stay
    peers.forget(42)  # nobody: nothing happens


# --- install ----------------------------------------------------------------------------------


def test_install_refuses_rollback() -> None:
    k0 = SenderKey(4, 1, 3, b"\x01" * 32)
    peers = peers_holding(k0)
    for stale in (SenderKey(4, 1, 2, b"\x02" * 32), SenderKey(4, 0, 9, b"\x02" * 32)):
        with pytest.raises(StaleSenderKey):
            peers.install(stale, 1.0)
    with pytest.raises(StaleSenderKey):  # the same place, another key
        peers.install(SenderKey(4, 1, 3, b"\x02" * 32), 1.0)
    assert peers.get(4) == k0
    peers.install(k0, 1.0)  # the same key again is ignored
    assert peers.kids == {k0.kid}


def test_install_after_ratchet_all_accepts_the_same_key_and_refuses_the_old() -> None:
    k0 = SenderKey(4, 0, 0, b"\x01" * 32)
    peers = peers_holding(k0)
    peers.ratchet_all(0.0)
    peers.install(k0.ratcheted(), 0.5)  # the sender's own key message: already held
    with pytest.raises(StaleSenderKey):
        peers.install(k0, 0.5)


def test_install_may_skip_steps_and_generations() -> None:
    peers = peers_holding(SenderKey(4, 0, 0, b"\x01" * 32))
    peers.install(SenderKey(4, 0, 5, b"\x02" * 32), 0.0)
    peers.install(SenderKey(4, 3, 0, b"\x03" * 32), 0.0)
    assert peers.get(4) == SenderKey(4, 3, 0, b"\x03" * 32)
    assert len(peers.kids) == 3  # two in their grace period
