"""A call that ends before its key agreement ran still zeroes its ephemeral secrets (X25519, and
the ML-KEM secrets of the hybrid exchange: the caller's key, the callee's shared secret)."""

from __future__ import annotations

import pytest

from voice.crypto import kem
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement
from voice.errors import KeyAgreementError

ALICE = Identity.from_seed(b"a" * 32).public_key
BOB = Identity.from_seed(b"b" * 32).public_key
CALL = b"c" * 16


def test_erase_zeroes_a_caller_secret_that_no_answer_used() -> None:
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    secret = caller._secret
    assert secret is not None and secret != bytes(32)
    assert caller._kem_private is not None  # the ML-KEM key, inside OpenSSL
    caller.erase()
    caller.erase()  # idempotent
    assert secret == bytes(32)
    assert caller._kem_private is None  # dropped: OpenSSL cleanses it as it frees it
    with pytest.raises(KeyAgreementError):  # the agreement is dead
        caller.receive_answer(
            eph_b=b"\x09" + bytes(31),
            continuity_b=bytes(64),
            callee_versions=(2,),
            version=2,
            kem_ciphertext=bytes(kem.CIPHERTEXT_BYTES),
            caller_description=b"",
            callee_description=b"",
        )


def test_erase_zeroes_a_callee_secret_that_no_reveal_used() -> None:
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=CALL,
        my_name="bob",
        peer_name="alice",
        commitment=caller.commitment,
        caller_versions=caller.versions,
        kem_key=caller.kem_key,
    )
    callee.answer()
    secret, shared = callee._secret, callee._kem_shared
    assert secret is not None and secret != bytes(32)
    assert shared is not None and shared != bytes(32)  # kept from the ringing to the reveal
    callee.erase()
    assert secret == bytes(32) and shared == bytes(32)
    with pytest.raises(KeyAgreementError):
        callee.receive_reveal(
            eph_a=caller.eph_a,
            continuity_a=caller.continuity_a,
            caller_description=b"",
            callee_description=b"",
        )


def test_the_secrets_are_gone_once_the_keys_exist() -> None:
    """After the exchange neither side holds an ephemeral or ML-KEM secret any more."""
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=CALL,
        my_name="bob",
        peer_name="alice",
        commitment=caller.commitment,
        caller_versions=caller.versions,
        kem_key=caller.kem_key,
    )
    ans = callee.answer()
    shared = callee._kem_shared
    reveal = caller.receive_answer(
        eph_b=ans.eph_b,
        continuity_b=ans.continuity_b,
        callee_versions=callee.versions,
        version=callee.version,
        kem_ciphertext=callee.kem_ciphertext,
        caller_description=b"",
        callee_description=b"",
    )
    assert caller._secret is None and caller._kem_private is None
    callee.receive_reveal(
        eph_a=reveal.eph_a,
        continuity_a=reveal.continuity_a,
        caller_description=b"",
        callee_description=b"",
    )
    assert callee._secret is None and callee._kem_shared is None
    assert shared == bytes(32)  # zeroed in place once mixed into the keys
