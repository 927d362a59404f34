"""SAS rendering, word/emoji lists, and a key changed after the commitment."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.voice.crypto.test_crypto_keyagreement import ALICE, BOB
from voice.crypto.keyagreement import CalleeKeyAgreement, CallerKeyAgreement
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


# ---- the commitment ---------------------------------------------------------------------------
# The match rate a grinding man in the middle gets, with controls that break the commitment, is
# measured once, on the real messages and envelopes: tests/adversarial/test_adv_sas_grinding.py.

BITS = 8


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
        caller_versions=m1.versions,
        kem_key=m1.kem_key,
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
