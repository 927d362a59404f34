"""SAS rendering, word/emoji lists, and the match rate a grinding man-in-the-middle gets."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.grinding import GrindStats, Opening, discloses_the_key, grind_reveal
from tests.voice.crypto.test_crypto_keyagreement import ALICE, BOB
from voice.crypto import keyagreement
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement
from voice.crypto.keyschedule import Exchange
from voice.crypto.sas import DEFAULT_SAS_BITS, MIN_SAFE_SAS_BITS, Sas
from voice.crypto.wordlists import EMOJI, WORDS
from voice.errors import CommitmentMismatch


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[:], i
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
    return row[-1]


def test_word_list_is_256_distinct_short_words() -> None:
    assert len(WORDS) == 256 and len(set(WORDS)) == 256
    assert all(w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 7 for w in WORDS)
    assert list(WORDS) == sorted(WORDS)
    close = [(a, b) for i, a in enumerate(WORDS) for b in WORDS[i + 1 :] if _levenshtein(a, b) < 2]
    assert close == []


def test_emoji_list_is_64_distinct_named_emoji() -> None:
    assert len(EMOJI) == 64
    assert len({e for e, _ in EMOJI}) == 64 and len({n for _, n in EMOJI}) == 64
    assert all(not e.isascii() and n for e, n in EMOJI)


def test_default_is_24_bits() -> None:
    sas = Sas.from_transcript_hash(bytes(32))
    assert sas.bits == DEFAULT_SAS_BITS == 24 >= MIN_SAFE_SAS_BITS >= 20
    assert len(sas.words) == 3 and len(sas.emoji) == 4 and len(sas.digits) == 8
    assert str(sas) == " ".join(sas.words)
    assert repr(sas) == "Sas(bits=24)"


@given(st.integers(1, 64).flatmap(lambda b: st.tuples(st.just(b), st.integers(0, 2**b - 1))))
def test_renderings_encode_the_value_exactly(bits_value: tuple[int, int]) -> None:
    bits, value = bits_value
    sas = Sas(value, bits)
    n_words, n_emoji = -(-bits // 8), -(-bits // 6)
    from_words = 0
    for w in sas.words:
        from_words = from_words << 8 | WORDS.index(w)
    assert from_words >> (8 * n_words - bits) == value
    from_emoji = 0
    for e in sas.emoji:
        from_emoji = from_emoji << 6 | [x for x, _ in EMOJI].index(e)
    assert from_emoji >> (6 * n_emoji - bits) == value
    assert int(sas.digits) == value


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_sas_equal_iff_transcript_hash_equal(a: bytes, b: bytes) -> None:
    assert (Sas.from_transcript_hash(a, 64) == Sas.from_transcript_hash(b, 64)) == (a == b)


def test_bits_are_validated() -> None:
    for bits in (0, 65):
        with pytest.raises(ValueError):
            Sas.from_transcript_hash(bytes(32), bits)
    with pytest.raises(ValueError):
        Sas(256, 8)


# ---- a grinding man-in-the-middle ---------------------------------------------------------------

BITS = 8  # small on purpose so the match rate is measurable: 1/256
TRIALS = 1500
BUDGET = 4096  # changed reveals per call: (255/256)^4096 < 1e-7 to miss where they are accepted
CONTROL_TRIALS = 40


def _mitm_call() -> tuple[bool, GrindStats]:
    """Mallory sits between Alice (caller) and Bob (callee), pretending to each to be the other
    (as if she had both identity keys). The messages go in their real order: Alice's offer,
    Mallory's offer to Bob, Bob's answer, Mallory's answer to Alice, Alice's reveal. Mallory then
    knows Alice's SAS and grinds her reveal to Bob (tests.support.grinding) before sending it.
    Returns whether the two SAS matched, and what the grinding did."""
    call_id = os.urandom(16)
    desc_a, desc_b = b"alice sdp", b"bob sdp"
    descs = {"caller_description": desc_a, "callee_description": desc_b}

    def caller(rng: Callable[[int], bytes] = os.urandom) -> CallerKeyAgreement:
        return CallerKeyAgreement(
            me=ALICE,
            peer=BOB,
            call_id=call_id,
            my_name="alice",
            peer_name="bob",
            rng=rng,
            sas_bits=BITS,
        )

    def callee(commitment: bytes) -> CalleeKeyAgreement:
        return CalleeKeyAgreement(
            me=BOB,
            peer=ALICE,
            call_id=call_id,
            my_name="bob",
            peer_name="alice",
            commitment=commitment,
            sas_bits=BITS,
        )

    alice = caller()
    committed = Opening.fresh()  # Mallory's, towards Bob
    m_caller = caller(committed.rng())
    bob = callee(m_caller.commitment)
    b_ans = bob.answer()
    m_callee = callee(alice.commitment)
    m_ans = m_callee.answer()
    a_rev = alice.receive_answer(eph_b=m_ans.eph_b, continuity_b=m_ans.continuity_b, **descs)
    with_alice = m_callee.receive_reveal(
        eph_a=a_rev.eph_a, continuity_a=a_rev.continuity_a, **descs
    )
    bob_leg = Exchange(
        call_id=call_id,
        caller=ALICE,
        callee=BOB,
        caller_name="alice",
        callee_name="bob",
        eph_a=b"",  # the reveal being ground
        eph_b=b_ans.eph_b,
        continuity_a=b"",
        continuity_b=b_ans.continuity_b,
        **descs,
    )
    chosen, stats = grind_reveal(
        bob_leg,
        committed=committed,
        commitment=m_caller.commitment,
        target=with_alice.sas.value,
        sas_bits=BITS,
        budget=BUDGET,
    )
    bob_keys = bob.receive_reveal(eph_a=chosen.eph_a, continuity_a=chosen.continuity_a, **descs)
    match = alice.keys().sas == bob_keys.sas
    assert with_alice.sas == alice.keys().sas and stats.predicted_match == match
    return match, stats


def test_grinding_mitm_match_rate_is_about_2_to_minus_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Control: with the commitment broken (the key in clear), the same attacker wins.
    with monkeypatch.context() as broken:
        broken.setattr(keyagreement, "commitment_of", discloses_the_key)
        wins = sum(_mitm_call()[0] for _ in range(CONTROL_TRIALS))
    assert wins >= CONTROL_TRIALS - 1
    results = [_mitm_call() for _ in range(TRIALS)]
    matches = sum(match for match, _ in results)
    expected = TRIALS / 2**BITS  # about 5.9
    print(f"control (key in clear): {wins}/{CONTROL_TRIALS} wins; {matches}/{TRIALS} matches")
    # P(X >= 25) for Binomial(1500, 1/256) is below 1e-8: a real bias would show.
    assert matches <= 25, f"{matches} matches in {TRIALS} trials (expected ~{expected:.1f})"
    # Mallory tried to change her reveal in every call she had not won yet; Bob's check would
    # have refused every change.
    assert all(stats.changed_tried > 0 for match, stats in results if not match)
    assert sum(stats.changed_accepted for _, stats in results) == 0


def test_mallory_cannot_change_her_key_after_seeing_bobs() -> None:
    call_id = os.urandom(16)
    m1 = CallerKeyAgreement(
        me=ALICE, peer=BOB, call_id=call_id, my_name="alice", peer_name="bob", sas_bits=BITS
    )
    bob = CalleeKeyAgreement(
        me=BOB,
        peer=ALICE,
        call_id=call_id,
        my_name="bob",
        peer_name="alice",
        commitment=m1.commitment,
    )
    bob.answer()
    m2 = CallerKeyAgreement(
        me=ALICE, peer=BOB, call_id=call_id, my_name="alice", peer_name="bob", sas_bits=BITS
    )
    with pytest.raises(CommitmentMismatch):
        bob.receive_reveal(
            eph_a=m2.eph_a,
            continuity_a=m2.continuity_a,
            caller_description=b"",
            callee_description=b"",
        )
