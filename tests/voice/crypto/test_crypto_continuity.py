"""Key continuity (ZRTP rs1/rs2): MATCH mixes the secret in, MISMATCH warns, NONE is quiet."""

from __future__ import annotations

from pathlib import Path

from tests.voice.crypto.test_crypto_keyagreement import ALICE, BOB, CALL, run_call
from voice.crypto.contacts import ContactBook
from voice.crypto.continuity import ContinuityResult, RetainedSecrets

S1, S2, S3, X = (bytes([i]) * 32 for i in (1, 2, 3, 9))


def test_match_mixes_secret_into_keys() -> None:
    rs = RetainedSecrets(S1, None)
    ka, kb = run_call(caller_rs=rs, callee_rs=rs)
    assert ka.continuity is kb.continuity is ContinuityResult.MATCH
    assert ka.srtp_gcm_tx == kb.srtp_gcm_rx and ka.sas == kb.sas
    assert ka.continuity_warning is None


def test_mixed_secret_is_in_the_key_schedule() -> None:
    """Recompute the caller's key by hand: it is derive(dh || rs, ...), not derive(dh, ...)."""
    from nacl.bindings import crypto_scalarmult

    from voice.crypto import kdf, kem
    from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement

    secrets: list[bytes] = []

    def rng(n: int) -> bytes:
        secrets.append(bytes([len(secrets) + 1]) * n)
        return secrets[-1]

    rs = RetainedSecrets(S1)
    caller = CallerKeyAgreement(
        me=ALICE, peer=BOB, call_id=CALL, my_name="alice", peer_name="bob", retained=rs, rng=rng
    )
    shared: list[bytes] = []

    def encapsulate(key: bytes) -> tuple[bytes, bytes]:
        ss, ct = kem.encapsulate(key)
        shared.append(bytes(bytearray(ss)))  # a copy: the agreement wipes its own
        return ss, ct

    callee = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=CALL,
        my_name="bob",
        peer_name="alice",
        commitment=caller.commitment,
        caller_versions=caller.versions,
        kem_key=caller.kem_key,
        retained=rs,
        encapsulate=encapsulate,
    )
    ans = callee.answer()
    caller.receive_answer(
        eph_b=ans.eph_b,
        continuity_b=ans.continuity_b,
        callee_versions=callee.versions,
        version=callee.version,
        kem_ciphertext=callee.kem_ciphertext,
        caller_description=b"",
        callee_description=b"",
    )
    keys = caller.keys()
    dh = crypto_scalarmult(secrets[0], ans.eph_b)
    label = kdf.LABEL_GCM_CALLER_TO_CALLEE
    assert keys.continuity is ContinuityResult.MATCH
    assert keys.srtp_gcm_tx == kdf.derive(dh + shared[0] + S1, label, keys.transcript_hash, 44)
    assert keys.srtp_gcm_tx != kdf.derive(dh + shared[0], label, keys.transcript_hash, 44)


def test_mitm_without_the_secret_gets_a_warning(tmp_path: Path) -> None:
    """Two verified calls build a chain; a third party holding the same identity key (stolen)
    but not the retained secret is flagged, and the real pair still matches afterwards."""
    book_a, book_b = ContactBook(tmp_path / "a.json"), ContactBook(tmp_path / "b.json")
    book_a.check("bob", BOB)
    book_b.check("alice", ALICE)
    for _ in range(2):
        ka, kb = run_call(
            caller_rs=book_a.get_retained("bob"), callee_rs=book_b.get_retained("alice")
        )
        assert ka.srtp_gcm_tx == kb.srtp_gcm_rx
        book_a.store_retained("bob", ka.next_retained)
        book_b.store_retained("alice", kb.next_retained)
        ka.erase()
        kb.erase()
    assert ka.continuity is ContinuityResult.MATCH
    mallory_rs = RetainedSecrets(X)  # knows Bob's key, not the history
    km, _ = run_call(caller_rs=book_a.get_retained("bob"), callee_rs=mallory_rs)
    assert km.continuity is ContinuityResult.MISMATCH and km.continuity_warning
    ka, kb = run_call(caller_rs=book_a.get_retained("bob"), callee_rs=book_b.get_retained("alice"))
    assert ka.continuity is kb.continuity is ContinuityResult.MATCH


def test_none_when_no_secret_yet() -> None:
    ka, kb = run_call()
    assert ka.continuity is kb.continuity is ContinuityResult.NONE


def test_mismatch_is_reported_on_both_sides_and_call_still_works() -> None:
    ka, kb = run_call(caller_rs=RetainedSecrets(S1, S2), callee_rs=RetainedSecrets(X, S3))
    assert ka.continuity is kb.continuity is ContinuityResult.MISMATCH
    assert ka.continuity_warning and "mismatch" in ka.continuity_warning.lower()
    assert ka.srtp_gcm_tx == kb.srtp_gcm_rx and ka.sas == kb.sas  # the call is not broken


def test_peer_lost_its_secret_warns_only_the_side_that_has_one() -> None:
    ka, kb = run_call(caller_rs=RetainedSecrets(S1), callee_rs=None)
    assert ka.continuity is ContinuityResult.MISMATCH
    assert kb.continuity is ContinuityResult.NONE
    assert ka.srtp_gcm_tx == kb.srtp_gcm_rx  # neither mixed anything in


def test_one_side_updated_other_did_not_is_still_a_match() -> None:
    # Alice stored S2 after the last call, Bob crashed before storing it: he still has S1.
    for caller_rs, callee_rs in (
        (RetainedSecrets(S2, S1), RetainedSecrets(S1, None)),
        (RetainedSecrets(S1, None), RetainedSecrets(S2, S1)),
        (RetainedSecrets(S3, S2), RetainedSecrets(X, S2)),
    ):
        ka, kb = run_call(caller_rs=caller_rs, callee_rs=callee_rs)
        assert ka.continuity is kb.continuity is ContinuityResult.MATCH
        assert ka.srtp_gcm_tx == kb.srtp_gcm_rx and ka.next_retained == kb.next_retained


def test_both_current_preferred_over_previous() -> None:
    both = RetainedSecrets(S2, S1)
    ka, kb = run_call(caller_rs=both, callee_rs=both)
    only_prev, _ = run_call(caller_rs=RetainedSecrets(S3, S1), callee_rs=RetainedSecrets(X, S1))
    assert ka.continuity is ContinuityResult.MATCH and ka.srtp_gcm_tx == kb.srtp_gcm_rx
    assert only_prev.continuity is ContinuityResult.MATCH


def test_tokens_are_bound_to_the_call() -> None:
    from voice.crypto.continuity import CALLER, continuity_token

    t1 = continuity_token(S1, role=CALLER, call_id=CALL, caller=ALICE, callee=BOB)
    t2 = continuity_token(S1, role=CALLER, call_id=b"d" * 16, caller=ALICE, callee=BOB)
    t3 = continuity_token(S1, role=b"callee", call_id=CALL, caller=ALICE, callee=BOB)
    assert len({t1, t2, t3}) == 3
