"""Key-agreement version 2: X25519 + ML-KEM-768, version negotiation, and what binds what."""

from __future__ import annotations

from typing import Any

import pytest
from nacl.bindings import crypto_scalarmult

from tests.voice.crypto.test_crypto_keyagreement import ALICE, BOB, CALL, EK, answer_of, offer_of
from voice.crypto import kdf, kem
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement, CallKeys
from voice.crypto.versions import check_list, negotiate, supported_list
from voice.errors import BadPublicKey, CommitmentMismatch, UnsupportedVersion

DESCS = {"caller_description": b"a", "callee_description": b"b"}


def caller(versions: tuple[int, ...] = (2,), **kw: Any) -> CallerKeyAgreement:
    return CallerKeyAgreement(
        me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob", versions=versions, **kw
    )


def callee(
    offer: dict[str, Any], versions: tuple[int, ...] = (2,), **kw: Any
) -> CalleeKeyAgreement:
    return CalleeKeyAgreement(
        me=BOB, peer=ALICE, call_id=CALL, my_name="bob", peer_name="alice", versions=versions,
        **offer, **kw,
    )  # fmt: skip


def run(a: CallerKeyAgreement, b: CalleeKeyAgreement, **tamper: Any) -> tuple[CallKeys, CallKeys]:
    answer = {**answer_of(b), **tamper}
    reveal = a.receive_answer(**answer, **DESCS)
    kb = b.receive_reveal(eph_a=reveal.eph_a, continuity_a=reveal.continuity_a, **DESCS)
    return a.keys(), kb


@pytest.mark.parametrize(
    ("ours", "theirs", "chosen"),
    [((2,), (2,), 2), ((1, 2), (2,), 2), ((2,), (1, 2), 2), ((1, 2), (1,), 1), ((1,), (1,), 1)],
)
def test_both_sides_agree_on_the_highest_common_version(
    ours: tuple[int, ...], theirs: tuple[int, ...], chosen: int
) -> None:
    a = caller(ours)
    b = callee(offer_of(a), theirs)
    assert b.version == chosen
    ka, kb = run(a, b)
    assert ka.sas == kb.sas and ka.srtp_gcm_tx == kb.srtp_gcm_rx
    assert bool(a.kem_key) == (2 in ours) and bool(b.kem_ciphertext) == (chosen == 2)


def test_unknown_versions_of_a_newer_caller_are_skipped() -> None:
    assert negotiate((2, 3, 9), (1, 2)) == 2
    b = callee({"commitment": bytes(32), "caller_versions": (2, 9), "kem_key": EK})
    assert b.version == 2 and b.caller_versions == (2, 9)


@pytest.mark.parametrize("offered", [(), (1,), (3, 4)])
def test_an_offer_without_a_common_version_is_refused(offered: tuple[int, ...]) -> None:
    with pytest.raises(UnsupportedVersion, match="no key-agreement version in common") as exc:
        callee({"commitment": bytes(32), "caller_versions": offered, "kem_key": b""})
    if not offered:
        assert "before version 2" in str(exc.value)


def test_version_lists_are_strict() -> None:
    for bad in ((), (2, 1), (2, 2), (0,), (256,), (True,), tuple(range(1, 10))):
        with pytest.raises(ValueError):
            check_list(bad)
    with pytest.raises(ValueError, match="not implemented"):
        supported_list((2, 3))
    with pytest.raises(ValueError):
        caller((3,))


@pytest.mark.parametrize(
    "tamper",
    [
        {"version": 1, "kem_ciphertext": b""},  # lists (1, 2) both: 1 is a downgrade
        {"callee_versions": (1,)},  # 2 is not in that list: not the choice made
        {"callee_versions": (2, 2)},
    ],
)
def test_the_caller_refuses_a_choice_that_is_not_the_best_common_one(tamper: Any) -> None:
    a = caller((1, 2))
    b = callee(offer_of(a), (1, 2))
    assert b.version == 2
    with pytest.raises(UnsupportedVersion):
        a.receive_answer(**{**answer_of(b), **tamper}, **DESCS)


def test_a_changed_ciphertext_changes_keys_and_sas() -> None:
    """ML-KEM's implicit rejection gives the caller a different secret, not an error; the
    ciphertext is in the transcript, so the SAS shows it too."""
    a = caller()
    b = callee(offer_of(a))
    ct = bytearray(answer_of(b)["kem_ciphertext"])
    ct[100] ^= 1
    ka, kb = run(a, b, kem_ciphertext=bytes(ct))
    assert ka.sas != kb.sas and ka.srtp_gcm_tx != kb.srtp_gcm_rx


def test_the_offers_list_and_ml_kem_key_are_bound_by_the_commitment() -> None:
    for change in ({"kem_key": kem.encapsulation_key(b"x" * 64)}, {"caller_versions": (1, 2)}):
        a = caller()
        b = callee({**offer_of(a), **change}, (1, 2))
        with pytest.raises(CommitmentMismatch):
            run(a, b)


def test_malformed_ml_kem_values_are_refused() -> None:
    with pytest.raises(BadPublicKey):
        kem.encapsulate(b"\xff" * kem.ENCAPSULATION_KEY_BYTES)  # not reduced mod q
    with pytest.raises(BadPublicKey):
        callee({"commitment": bytes(32), "caller_versions": (2,), "kem_key": b"short"}).answer()
    a = caller()
    b = callee(offer_of(a))
    with pytest.raises(BadPublicKey):
        run(a, b, kem_ciphertext=bytes(1087))
    a = caller((1, 2))
    b = callee(offer_of(a), (1,))
    with pytest.raises(BadPublicKey):  # version 1 carries no ciphertext
        run(a, b, kem_ciphertext=bytes(kem.CIPHERTEXT_BYTES))


def test_a_recording_needs_both_secrets() -> None:
    """Harvest now, decrypt later: whoever later breaks X25519 gets ``dh``, and whoever breaks
    ML-KEM gets the KEM secret; with either alone and every public value (the transcript
    hash), no SRTP key follows. Control: both together give it."""
    taken: list[bytes] = []

    def rng(n: int) -> bytes:
        taken.append(bytes([len(taken) + 7]) * n)
        return taken[-1]

    shared: list[bytes] = []

    def encapsulate(key: bytes) -> tuple[bytes, bytes]:
        ss, ct = kem.encapsulate(key)
        shared.append(bytes(bytearray(ss)))
        return ss, ct

    a = caller(rng=rng)
    b = callee(offer_of(a), encapsulate=encapsulate)
    ka, _ = run(a, b)
    dh = crypto_scalarmult(taken[0], answer_of(b)["eph_b"])
    th, label = ka.transcript_hash, kdf.LABEL_GCM_CALLER_TO_CALLEE
    assert kdf.derive(dh + shared[0], label, th, 44) == ka.srtp_gcm_tx  # control
    for known in (dh, shared[0], dh + bytes(32), bytes(32) + shared[0]):
        assert kdf.derive(known, label, th, 44) != ka.srtp_gcm_tx
