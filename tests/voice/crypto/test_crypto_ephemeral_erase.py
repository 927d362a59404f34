"""A call that ends before its key agreement ran still zeroes its ephemeral secret."""

from __future__ import annotations

import pytest

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
    caller.erase()
    caller.erase()  # idempotent
    assert secret == bytes(32)
    with pytest.raises(KeyAgreementError):  # the agreement is dead
        caller.receive_answer(
            eph_b=b"\x09" + bytes(31),
            continuity_b=bytes(64),
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
    )
    callee.answer()
    secret = callee._secret
    assert secret is not None and secret != bytes(32)
    callee.erase()
    assert secret == bytes(32)
    with pytest.raises(KeyAgreementError):
        callee.receive_reveal(
            eph_a=caller.eph_a,
            continuity_a=caller.continuity_a,
            caller_description=b"",
            callee_description=b"",
        )
