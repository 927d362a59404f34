"""Committed key agreement: equal keys and SAS on both sides, commitment, low-order points."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.crypto.continuity import ContinuityResult, RetainedSecrets
from voice.crypto.identity import Identity
from voice.crypto.kem import encapsulate, encapsulation_key
from voice.crypto.keyagreement import (
    SMALL_ORDER_POINTS,
    CalleeKeyAgreement,
    CallerKeyAgreement,
    CallKeys,
    commitment_of,
    encode_transcript,
)
from voice.errors import BadPublicKey, CommitmentMismatch, KeyAgreementError

ALICE = Identity.from_seed(b"a" * 32).public_key
BOB = Identity.from_seed(b"b" * 32).public_key
CAROL = Identity.from_seed(b"c" * 32).public_key
CALL = b"c" * 16
DESC_A, DESC_B = b"caller sdp", b"callee sdp"
EK = encapsulation_key(b"k" * 64)  # an ML-KEM-768 key nobody in these tests decapsulates for


def offer_of(caller: CallerKeyAgreement) -> dict[str, Any]:
    """What the callee's agreement takes from the caller's offer."""
    return {
        "commitment": caller.commitment,
        "caller_versions": caller.versions,
        "kem_key": caller.kem_key,
    }


def answer_of(callee: CalleeKeyAgreement) -> dict[str, Any]:
    """What the caller's agreement takes from the callee's ringing."""
    ans = callee.answer()
    return {
        "eph_b": ans.eph_b,
        "continuity_b": ans.continuity_b,
        "callee_versions": callee.versions,
        "version": callee.version,
        "kem_ciphertext": callee.kem_ciphertext,
    }


def chose_hybrid(caller: CallerKeyAgreement) -> dict[str, Any]:
    """A well-formed version-2 choice with a real ciphertext, for a made-up ``eph_b``."""
    return {"callee_versions": (2,), "version": 2, "kem_ciphertext": encapsulate(caller.kem_key)[1]}


def run_call(
    *,
    call_id: bytes = CALL,
    caller_descs: tuple[bytes, bytes] = (DESC_A, DESC_B),
    callee_descs: tuple[bytes, bytes] = (DESC_A, DESC_B),
    caller_rs: RetainedSecrets | None = None,
    callee_rs: RetainedSecrets | None = None,
    caller_names: tuple[str, str] = ("alice", "bob"),
    callee_names: tuple[str, str] = ("alice", "bob"),
) -> tuple[CallKeys, CallKeys]:
    """One call; ``*_names`` = (caller's username, callee's username) as each side knows them."""
    caller = CallerKeyAgreement(
        me=ALICE,
        peer=BOB,
        call_id=call_id,
        my_name=caller_names[0],
        peer_name=caller_names[1],
        retained=caller_rs,
    )
    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=call_id,
        my_name=callee_names[1],
        peer_name=callee_names[0],
        **offer_of(caller),
        retained=callee_rs,
    )
    callee.answer()
    rev = caller.receive_answer(
        **answer_of(callee),
        caller_description=caller_descs[0],
        callee_description=caller_descs[1],
    )
    kb = callee.receive_reveal(
        eph_a=rev.eph_a,
        continuity_a=rev.continuity_a,
        caller_description=callee_descs[0],
        callee_description=callee_descs[1],
    )
    return caller.keys(), kb


def assert_same(ka: CallKeys, kb: CallKeys) -> None:
    assert ka.srtp_gcm_tx == kb.srtp_gcm_rx and ka.srtp_gcm_rx == kb.srtp_gcm_tx
    assert ka.srtp_cm_tx == kb.srtp_cm_rx and ka.srtp_cm_rx == kb.srtp_cm_tx
    assert ka.sas == kb.sas and ka.transcript_hash == kb.transcript_hash
    assert ka.next_retained == kb.next_retained


def test_both_sides_derive_identical_keys_and_sas() -> None:
    ka, kb = run_call()
    assert_same(ka, kb)
    assert len(ka.srtp_gcm_tx) == 44 and len(ka.srtp_cm_tx) == 30
    assert ka.srtp_gcm_tx != ka.srtp_gcm_rx and ka.srtp_cm_tx != ka.srtp_cm_rx
    assert len(ka.sas.words) == 3 and ka.sas.bits == 24
    assert ka.continuity is kb.continuity is ContinuityResult.NONE
    assert ka.continuity_warning is None


@settings(max_examples=25, deadline=None)
@given(
    call_id=st.binary(min_size=16, max_size=16),
    desc_a=st.binary(max_size=300),
    desc_b=st.binary(max_size=300),
)
def test_round_trip_any_descriptions(call_id: bytes, desc_a: bytes, desc_b: bytes) -> None:
    ka, kb = run_call(call_id=call_id, caller_descs=(desc_a, desc_b), callee_descs=(desc_a, desc_b))
    assert_same(ka, kb)


@pytest.mark.parametrize(
    "callee_descs",
    [(DESC_A + b"!", DESC_B), (DESC_A, DESC_B + b"!"), (DESC_B, DESC_A), (DESC_A + DESC_B, b"")],
)
def test_different_transcripts_give_different_keys_and_sas(
    callee_descs: tuple[bytes, bytes],
) -> None:
    ka, kb = run_call(callee_descs=callee_descs)
    assert ka.transcript_hash != kb.transcript_hash
    assert ka.sas != kb.sas
    assert ka.srtp_gcm_tx != kb.srtp_gcm_rx and ka.srtp_cm_tx != kb.srtp_cm_rx


@pytest.mark.parametrize(
    "callee_names",
    [
        ("mallory", "bob"),  # the server relabelled the caller (identity misbinding)
        ("alice", "bobby"),  # the caller dialed another name than the callee's login
        ("bob", "alice"),  # names swapped
        ("alic", "ebob"),  # same bytes when concatenated: the length prefixes tell them apart
    ],
)
def test_usernames_are_bound_into_the_transcript(callee_names: tuple[str, str]) -> None:
    """Same keys and messages, but the two sides disagree on a username: nothing matches."""
    ka, kb = run_call(callee_names=callee_names)
    assert ka.transcript_hash != kb.transcript_hash
    assert ka.sas != kb.sas
    assert ka.srtp_gcm_tx != kb.srtp_gcm_rx and ka.srtp_gcm_rx != kb.srtp_gcm_tx
    assert ka.srtp_cm_tx != kb.srtp_cm_rx and ka.next_retained != kb.next_retained


def test_agreeing_usernames_give_the_same_keys() -> None:
    names = ("carol-2", "dave_x")
    ka, kb = run_call(caller_names=names, callee_names=names)
    assert_same(ka, kb)


def test_a_username_changes_the_transcript_as_documented() -> None:
    base = {
        "call_id": CALL,
        "caller": ALICE,
        "callee": BOB,
        "caller_versions": (2,),
        "callee_versions": (2,),
        "version": 2,
        "eph_a": b"\x01" * 32,
        "eph_b": b"\x02" * 32,
        "kem_key": EK,
        "kem_ciphertext": b"\x03" * 1088,
        "continuity_a": bytes(64),
        "continuity_b": bytes(64),
        "caller_description": DESC_A,
        "callee_description": DESC_B,
    }
    honest = encode_transcript(**base, caller_name="alice", callee_name="bob")
    relabelled = encode_transcript(**base, caller_name="mallory", callee_name="bob")
    assert honest != relabelled
    assert honest.startswith(b"\x00\x00\x00\x13voice transcript v3")
    assert b"\x00\x00\x00\x05alice\x00\x00\x00\x03bob\x00\x00\x00\x01\x02" in honest


@pytest.mark.parametrize("names", [("", "bob"), ("alice", "")])
def test_empty_usernames_are_refused(names: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name=names[0], peer_name=names[1])
    with pytest.raises(ValueError):
        CalleeKeyAgreement(
            me=BOB,
            peer=ALICE,
            call_id=CALL,
            commitment=bytes(32),
            caller_versions=(2,),
            kem_key=EK,
            my_name=names[1],
            peer_name=names[0],
        )


def test_our_own_identity_key_as_the_peer_is_refused() -> None:
    with pytest.raises(BadPublicKey):
        CallerKeyAgreement(me=ALICE, peer=ALICE, call_id=CALL, my_name="alice", peer_name="bob")
    with pytest.raises(BadPublicKey):
        CalleeKeyAgreement(
            me=BOB,
            peer=BOB,
            call_id=CALL,
            commitment=bytes(32),
            caller_versions=(2,),
            kem_key=EK,
            my_name="bob",
            peer_name="x",
        )


def test_every_call_has_fresh_keys() -> None:
    k1, _ = run_call()
    k2, _ = run_call()
    assert k1.srtp_gcm_tx != k2.srtp_gcm_tx and k1.transcript_hash != k2.transcript_hash


def test_commitment_mismatch_is_refused() -> None:
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=CALL,
        my_name="bob",
        peer_name="alice",
        **offer_of(caller),
    )
    callee.answer()
    rev = caller.receive_answer(
        **answer_of(callee),
        caller_description=DESC_A,
        callee_description=DESC_B,
    )
    other = CallerKeyAgreement(
        me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob"
    )  # a key chosen after the fact
    with pytest.raises(CommitmentMismatch):
        callee.receive_reveal(
            eph_a=other.eph_a,
            continuity_a=rev.continuity_a,
            caller_description=DESC_A,
            callee_description=DESC_B,
        )
    with pytest.raises(KeyAgreementError):  # dead after a failure: no second try
        callee.receive_reveal(
            eph_a=rev.eph_a,
            continuity_a=rev.continuity_a,
            caller_description=DESC_A,
            callee_description=DESC_B,
        )


@pytest.mark.parametrize("field", ["eph_a", "continuity_a"])
def test_commitment_covers_each_revealed_field(field: str) -> None:
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=CALL,
        my_name="bob",
        peer_name="alice",
        **offer_of(caller),
    )
    callee.answer()
    rev = caller.receive_answer(
        **answer_of(callee),
        caller_description=DESC_A,
        callee_description=DESC_B,
    )
    values = {"eph_a": rev.eph_a, "continuity_a": rev.continuity_a}
    tampered = bytearray(values[field])
    tampered[0] ^= 1
    values[field] = bytes(tampered)
    with pytest.raises(CommitmentMismatch):
        callee.receive_reveal(**values, caller_description=DESC_A, callee_description=DESC_B)


def test_commitment_is_bound_to_call_and_identities() -> None:
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    for call_id, me, peer in ((b"d" * 16, BOB, ALICE), (CALL, ALICE, BOB), (CALL, BOB, CAROL)):
        callee = CalleeKeyAgreement(
            me=me,
            peer=peer,
            call_id=call_id,
            **offer_of(caller),
            my_name="bob",
            peer_name="alice",
        )
        callee.answer()
        if (call_id, me, peer) == (CALL, BOB, ALICE):
            continue
        with pytest.raises(CommitmentMismatch):
            callee.receive_reveal(
                eph_a=caller.eph_a,
                continuity_a=caller.continuity_a,
                caller_description=DESC_A,
                callee_description=DESC_B,
            )


def test_malformed_commitment() -> None:
    with pytest.raises(CommitmentMismatch):
        CalleeKeyAgreement(
            me=BOB,
            peer=ALICE,
            call_id=CALL,
            my_name="bob",
            peer_name="alice",
            commitment=b"short",
            caller_versions=(2,),
            kem_key=EK,
        )


@pytest.mark.parametrize("point", SMALL_ORDER_POINTS)
@pytest.mark.parametrize("high_bit", [False, True])
def test_low_order_eph_b_is_refused(point: bytes, high_bit: bool) -> None:
    if high_bit:
        point = point[:31] + bytes([point[31] | 0x80])
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    with pytest.raises(BadPublicKey):
        caller.receive_answer(
            eph_b=point,
            continuity_b=bytes(64),
            **chose_hybrid(caller),
            caller_description=DESC_A,
            callee_description=DESC_B,
        )
    with pytest.raises(KeyAgreementError):
        caller.keys()


@pytest.mark.parametrize("point", SMALL_ORDER_POINTS)
def test_low_order_eph_a_is_refused_even_with_matching_commitment(point: bytes) -> None:
    """A malicious caller commits to a low-order key: the callee still refuses it."""
    cont = bytes(64)
    commitment = commitment_of(
        call_id=CALL,
        caller=ALICE,
        callee=BOB,
        versions=(2,),
        kem_key=EK,
        eph_a=point,
        continuity_a=cont,
    )
    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=CALL,
        my_name="bob",
        peer_name="alice",
        commitment=commitment,
        caller_versions=(2,),
        kem_key=EK,
    )
    callee.answer()
    with pytest.raises(BadPublicKey):
        callee.receive_reveal(
            eph_a=point, continuity_a=cont, caller_description=DESC_A, callee_description=DESC_B
        )


def test_known_small_order_points_really_are_non_contributory() -> None:
    """The list is right: an independent X25519 (OpenSSL) also gets all zeros from each point."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    for point in SMALL_ORDER_POINTS:
        with pytest.raises(ValueError):  # OpenSSL also refuses the all-zero result
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(point))


def test_malformed_public_keys() -> None:
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    with pytest.raises(BadPublicKey):
        caller.receive_answer(
            eph_b=b"short",
            continuity_b=b"",
            **chose_hybrid(caller),
            caller_description=b"",
            callee_description=b"",
        )
    with pytest.raises(BadPublicKey):
        CallerKeyAgreement(me=b"x", peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    with pytest.raises(ValueError):
        CallerKeyAgreement(me=ALICE, peer=BOB, call_id=b"short", my_name="alice", peer_name="bob")


def test_echoed_ephemeral_is_refused() -> None:
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    with pytest.raises(BadPublicKey):
        caller.receive_answer(
            eph_b=caller.eph_a,
            continuity_b=bytes(64),
            **chose_hybrid(caller),
            caller_description=b"",
            callee_description=b"",
        )


def test_out_of_order_use() -> None:
    caller = CallerKeyAgreement(me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob")
    with pytest.raises(KeyAgreementError):
        caller.keys()
    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=CALL,
        my_name="bob",
        peer_name="alice",
        **offer_of(caller),
    )
    with pytest.raises(KeyAgreementError):
        callee.receive_reveal(
            eph_a=caller.eph_a,
            continuity_a=caller.continuity_a,
            caller_description=b"",
            callee_description=b"",
        )
    ans = callee.answer()
    assert callee.answer() is ans
    kwargs = answer_of(callee)
    caller.receive_answer(**kwargs, caller_description=b"", callee_description=b"")
    with pytest.raises(KeyAgreementError):
        caller.receive_answer(**kwargs, caller_description=b"", callee_description=b"")


def test_ephemeral_secret_is_wiped_and_keys_erase() -> None:
    taken: list[bytes] = []

    def rng(n: int) -> bytes:
        taken.append(os.urandom(n))
        return taken[-1]

    caller = CallerKeyAgreement(
        me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob", rng=rng
    )
    secret = caller._secret
    assert secret is not None and secret == taken[0]
    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=CALL,
        my_name="bob",
        peer_name="alice",
        **offer_of(caller),
    )
    callee.answer()
    caller.receive_answer(
        **answer_of(callee),
        caller_description=b"",
        callee_description=b"",
    )
    assert secret == bytes(32) and caller._secret is None  # our copy was zeroed
    assert taken[0] != bytes(32)  # the rng's own bytes were not touched
    keys = caller.keys()
    tx = keys.srtp_gcm_tx
    keys.erase()
    assert tx == bytes(44) and keys.srtp_cm_rx == bytes(30) and keys.next_retained == bytes(32)


def test_repr_hides_secrets() -> None:
    ka, _ = run_call()
    text = repr(ka)
    for secret in (ka.srtp_gcm_tx, ka.transcript_hash, ka.next_retained):
        assert secret.hex() not in text and repr(secret) not in text
    assert " ".join(ka.sas.words) not in text
