"""SFrame (RFC 9605): the RFC's own test vectors, then tampering, replay, misuse and fuzzing.

The vectors are tests/vectors/sframe/rfc9605-test-vectors.json, the working group's JSON of
RFC 9605 Appendix C (its README names the commit). Intermediate values the API does not
return (sframe_secret, the ratchet) are recomputed here with ``hmac`` as a second opinion.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from voice.errors import CounterExhausted, SFrameError, UnknownKeyId, VoiceError
from voice.group.sframe import (
    MAX_VALUE,
    REPLAY_WINDOW,
    CipherSuite,
    Header,
    SFrameReceiver,
    SFrameSender,
    compose_kid,
    derive_key_salt,
    frame_nonce,
    labels,
    ratchet,
    split_kid,
)
from voice.group.suites import new_aead

VECTOR_DIR = Path(__file__).resolve().parents[2] / "vectors" / "sframe"
VECTOR_FILE = VECTOR_DIR / "rfc9605-test-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTOR_FILE.read_text())
VECTOR_SHA256 = "b8d35efd41749567427cb9ae52d9a7362904154978ff6a5fb20c0258a8ffdec1"

GCM = CipherSuite.AES_128_GCM_SHA256_128
KEY_A = bytes(range(16))
KEY_B = bytes(range(16, 32))
HASHES = {1: "sha256", 2: "sha256", 3: "sha256", 4: "sha256", 5: "sha512"}


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def pair(suite: CipherSuite = GCM, kid: int = 7, **kw: Any) -> tuple[SFrameSender, SFrameReceiver]:
    receiver = SFrameReceiver(suite, **kw)
    receiver.add_key(kid, KEY_A)
    return SFrameSender(kid, KEY_A, suite), receiver


# --- the vectors themselves -----------------------------------------------------------------------


def test_the_vector_file_is_the_documented_one() -> None:
    assert hashlib.sha256(VECTOR_FILE.read_bytes()).hexdigest() == VECTOR_SHA256
    assert VECTOR_SHA256 in (VECTOR_DIR / "README.md").read_text()
    assert len(VECTORS["header"]) == 289
    assert [v["cipher_suite"] for v in VECTORS["aes_ctr_hmac"]] == [1, 2, 3]
    assert [v["cipher_suite"] for v in VECTORS["sframe"]] == [int(s) for s in CipherSuite]


def test_every_header_vector_encodes_and_decodes_exactly() -> None:
    for vector in VECTORS["header"]:
        encoded = h(vector["encoded"])
        assert Header(vector["kid"], vector["ctr"]).encode() == encoded, vector
        assert Header.decode(encoded) == (Header(vector["kid"], vector["ctr"]), len(encoded))
        assert Header.decode(encoded + b"body") == Header.decode(encoded)


@pytest.mark.parametrize(
    "vector", VECTORS["aes_ctr_hmac"], ids=lambda v: f"suite{v['cipher_suite']}"
)
def test_aes_ctr_hmac_vector(vector: dict[str, Any]) -> None:
    suite = CipherSuite(vector["cipher_suite"])
    key = h(vector["key"])
    assert key[:16] == h(vector["enc_key"]) and key[16:] == h(vector["auth_key"])
    aead = new_aead(suite, key)
    nonce, aad, pt, ct = (h(vector[k]) for k in ("nonce", "aad", "pt", "ct"))
    assert aead.encrypt(nonce, aad, pt) == ct
    assert aead.decrypt(nonce, aad, ct) == pt
    assert len(ct) == len(pt) + suite.nt


@pytest.mark.parametrize("vector", VECTORS["sframe"], ids=lambda v: f"suite{v['cipher_suite']}")
def test_sframe_vector(vector: dict[str, Any]) -> None:
    suite, kid, ctr = CipherSuite(vector["cipher_suite"]), vector["kid"], vector["ctr"]
    base_key, metadata, pt, ct = (h(vector[k]) for k in ("base_key", "metadata", "pt", "ct"))
    assert labels(kid, suite) == (h(vector["sframe_key_label"]), h(vector["sframe_salt_label"]))
    # HKDF-Extract("", base_key) is HMAC with an empty key: a second opinion on the secret.
    secret = hmac.new(b"", base_key, HASHES[suite]).digest()
    assert secret == h(vector["sframe_secret"])
    key, salt = derive_key_salt(kid, base_key, suite)
    assert (key, salt) == (h(vector["sframe_key"]), h(vector["sframe_salt"]))
    nonce = frame_nonce(salt, ctr)
    assert nonce == h(vector["nonce"])
    header = Header(kid, ctr).encode()
    assert header + metadata == h(vector["aad"])
    assert new_aead(suite, key).encrypt(nonce, header + metadata, pt) == ct[len(header) :]
    if suite.is_gcm:  # and once more straight through cryptography's AES-GCM
        assert AESGCM(key).encrypt(nonce, pt, header + metadata) == ct[len(header) :]

    sender = SFrameSender(kid, base_key, suite, ctr=ctr)
    assert sender.protect(pt, metadata) == ct
    receiver = SFrameReceiver(int(suite))
    receiver.add_key(kid, base_key)
    assert receiver.unprotect(ct, metadata) == (kid, pt)


def test_suite_constants_match_their_hashes() -> None:
    for suite in CipherSuite:
        assert suite.nh == hashlib.new(HASHES[suite]).digest_size
        assert suite.nn == 12
        assert suite.nk == (48 if not suite.is_gcm else {4: 16, 5: 32}[suite])


# --- round trips and the sender's counter ---------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    suite=st.sampled_from(CipherSuite),
    kid=st.integers(0, MAX_VALUE),
    ctr=st.integers(0, MAX_VALUE),
    frame=st.binary(max_size=1500),
    metadata=st.binary(max_size=40),
)
def test_round_trip(suite: CipherSuite, kid: int, ctr: int, frame: bytes, metadata: bytes) -> None:
    sender = SFrameSender(kid, KEY_A, suite, ctr=ctr)
    receiver = SFrameReceiver(suite)
    receiver.add_key(kid, KEY_A)
    data = sender.protect(frame, metadata)
    header = Header(kid, ctr).encode()
    assert data.startswith(header) and len(data) == len(header) + len(frame) + suite.nt
    assert receiver.unprotect(data, metadata) == (kid, frame)


@settings(max_examples=200, deadline=None)
@given(kid=st.integers(0, MAX_VALUE), ctr=st.integers(0, MAX_VALUE))
def test_header_round_trip_is_minimal(kid: int, ctr: int) -> None:
    encoded = Header(kid, ctr).encode()
    extra = sum(0 if v < 8 else max(1, (v.bit_length() + 7) // 8) for v in (kid, ctr))
    assert len(encoded) == 1 + extra
    assert Header.decode(encoded) == (Header(kid, ctr), len(encoded))


def test_the_sender_counts_up_and_never_reuses_a_counter() -> None:
    sender, receiver = pair()
    frames = [sender.protect(b"x") for _ in range(300)]
    assert [Header.decode(f)[0].ctr for f in frames] == list(range(300))
    assert all(receiver.unprotect(f) == (7, b"x") for f in frames)
    assert sender.next_ctr == 300


def test_counter_exhaustion_is_refused() -> None:
    sender = SFrameSender(3, KEY_A, GCM, ctr=MAX_VALUE)
    last = sender.protect(b"last")
    assert Header.decode(last)[0] == Header(3, MAX_VALUE)
    for _ in range(2):
        with pytest.raises(CounterExhausted):
            sender.protect(b"one too many")
    assert sender.next_ctr == MAX_VALUE + 1
    assert isinstance(CounterExhausted("x"), SFrameError)
    with pytest.raises(ValueError):
        SFrameSender(3, KEY_A, GCM, ctr=MAX_VALUE + 1)


# --- tampering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", list(CipherSuite), ids=lambda s: s.name)
def test_every_flipped_bit_is_rejected(suite: CipherSuite) -> None:
    kid = 0x1234  # an extended KID, so the header has KID bytes and CTR bytes to flip
    sender = SFrameSender(kid, KEY_A, suite, ctr=1000)
    receiver = SFrameReceiver(suite)
    receiver.add_key(kid, KEY_A)
    data = sender.protect(b"an opus frame", b"rtp metadata")
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(SFrameError):
                receiver.unprotect(bytes(bad), b"rtp metadata")
    for metadata in (b"", b"rtp metadatA", b"rtp metadata!"):
        with pytest.raises(SFrameError):
            receiver.unprotect(data, metadata)
    with pytest.raises(SFrameError):  # a truncated tag
        receiver.unprotect(data[:-1], b"rtp metadata")
    # None of the failures moved the replay window: the genuine frame still opens, once.
    assert receiver.unprotect(data, b"rtp metadata") == (kid, b"an opus frame")


@pytest.mark.parametrize("same_base_key", [False, True])
def test_a_frame_relabelled_with_another_kid_is_rejected(same_base_key: bool) -> None:
    receiver = SFrameReceiver(GCM)
    receiver.add_key(1, KEY_A)
    receiver.add_key(2, KEY_A if same_base_key else KEY_B)
    data = SFrameSender(1, KEY_A, GCM, ctr=9).protect(b"frame")
    length = Header.decode(data)[1]
    relabelled = Header(2, 9).encode() + data[length:]
    with pytest.raises(SFrameError) as caught:
        receiver.unprotect(relabelled)
    assert not isinstance(caught.value, UnknownKeyId)
    assert receiver.unprotect(data) == (1, b"frame")


# --- replay ---------------------------------------------------------------------------------------


def test_a_replayed_frame_is_rejected() -> None:
    sender, receiver = pair()
    data = sender.protect(b"frame")
    assert receiver.unprotect(data) == (7, b"frame")
    with pytest.raises(SFrameError, match="replayed"):
        receiver.unprotect(data)


def test_reordering_within_the_window_is_accepted_once() -> None:
    sender, receiver = pair()
    frames = [sender.protect(bytes([i])) for i in range(REPLAY_WINDOW)]
    order = list(range(REPLAY_WINDOW))[::-1]
    order = order[1::2] + order[::2]
    for i in order:
        assert receiver.unprotect(frames[i]) == (7, bytes([i]))
    for i in (0, 1, REPLAY_WINDOW - 1):
        with pytest.raises(SFrameError):
            receiver.unprotect(frames[i])


def test_a_counter_older_than_the_window_is_rejected() -> None:
    sender, receiver = pair(replay_window=16)
    frames = [sender.protect(b"f") for _ in range(18)]
    receiver.unprotect(frames[17])
    receiver.unprotect(frames[2])  # 15 behind the highest: inside a window of 16
    with pytest.raises(SFrameError):
        receiver.unprotect(frames[1])  # 16 behind: outside
    far = SFrameSender(7, KEY_A, GCM, ctr=MAX_VALUE).protect(b"f")
    assert receiver.unprotect(far) == (7, b"f")  # a huge jump forgets the old window
    with pytest.raises(SFrameError):
        receiver.unprotect(frames[3])


def test_windows_are_per_kid() -> None:
    receiver = SFrameReceiver(GCM)
    receiver.add_key(1, KEY_A)
    receiver.add_key(2, KEY_B)
    a, b = SFrameSender(1, KEY_A, GCM), SFrameSender(2, KEY_B, GCM)
    assert receiver.unprotect(a.protect(b"a0")) == (1, b"a0")
    assert receiver.unprotect(b.protect(b"b0")) == (2, b"b0")  # CTR 0 again, other KID


# --- keys -----------------------------------------------------------------------------------------


def test_an_unknown_kid_is_rejected_and_opens_once_its_key_arrives() -> None:
    receiver = SFrameReceiver(GCM)
    data = SFrameSender(300, KEY_A, GCM).protect(b"early")
    with pytest.raises(UnknownKeyId) as caught:
        receiver.unprotect(data)
    assert caught.value.kid == 300
    assert isinstance(caught.value, SFrameError) and isinstance(caught.value, VoiceError)
    receiver.add_key(300, KEY_A)  # buffered and retried, as RFC 9605 allows
    assert receiver.unprotect(data) == (300, b"early")
    receiver.remove_key(300)
    receiver.remove_key(300)  # idempotent
    assert 300 not in receiver and receiver.kids == frozenset()
    with pytest.raises(UnknownKeyId):
        receiver.unprotect(SFrameSender(300, KEY_A, GCM, ctr=1).protect(b"late"))


def test_a_wrong_base_key_is_rejected() -> None:
    receiver = SFrameReceiver(GCM)
    receiver.add_key(5, KEY_B)
    with pytest.raises(SFrameError):
        receiver.unprotect(SFrameSender(5, KEY_A, GCM).protect(b"frame"))


def test_misuse_is_refused() -> None:
    receiver = SFrameReceiver(GCM)
    receiver.add_key(1, KEY_A)
    with pytest.raises(ValueError):
        receiver.add_key(1, KEY_B)  # would silently drop KID 1's replay window
    with pytest.raises(ValueError):
        SFrameReceiver(0x0006)  # not an RFC 9605 suite
    with pytest.raises(ValueError):
        SFrameReceiver(GCM, replay_window=0)
    with pytest.raises(ValueError):
        SFrameSender(1, b"short", GCM)
    for kid, ctr in ((-1, 0), (0, -1), (MAX_VALUE + 1, 0), (0, MAX_VALUE + 1)):
        with pytest.raises(ValueError):
            Header(kid, ctr)
    with pytest.raises(ValueError):
        new_aead(GCM, bytes(32))


def test_keys_never_show_in_a_repr() -> None:
    sender, receiver = pair()
    key, salt = derive_key_salt(7, KEY_A, GCM)
    for obj in (
        sender,
        receiver,
        sender._key,
        receiver._keys[7][0],
        new_aead(CipherSuite(1), key * 3),
    ):
        text = repr(obj)
        for secret in (KEY_A, key, salt):
            assert secret.hex() not in text and repr(secret) not in text


# --- malformed headers and fuzzing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([0x80]),  # X=1, KID of 1 byte, missing
        bytes([0xF0]) + bytes(7),  # a KID of 8 bytes, 7 present
        bytes([0x08]),  # Y=1, CTR of 1 byte, missing
        bytes([0x8F, 0x10]) + bytes(7),  # KID present, CTR of 8 bytes, 7 present
        bytes([0x80, 0x05]),  # KID 5 in a byte: it belongs in the config byte
        bytes([0x90, 0x00, 0x08]),  # KID 8 in two bytes: a leading zero
        bytes([0x0F]) + bytes(8),  # CTR 0 in eight bytes
        bytes([0x09, 0x00, 0xFF]),  # CTR 255 in two bytes
    ],
    ids=lambda d: d.hex() or "empty",
)
def test_malformed_headers_raise_sframe_error(data: bytes) -> None:
    with pytest.raises(SFrameError):
        Header.decode(data)
    _, receiver = pair()
    for candidate in (data, data + bytes(32)):  # alone, and followed by a would-be body
        with pytest.raises(SFrameError):
            receiver.unprotect(candidate)


def _fuzz_receiver(suite: CipherSuite) -> SFrameReceiver:
    receiver = SFrameReceiver(suite)
    for kid in (*range(8), 0xFF, 0x1234, MAX_VALUE):
        receiver.add_key(kid, KEY_A)
    return receiver


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), metadata=st.binary(max_size=8))
def test_fuzz_random_bytes_only_raise_sframe_error(data: bytes, metadata: bytes) -> None:
    receiver = _fuzz_receiver(CipherSuite.AES_128_CTR_HMAC_SHA256_80)
    with pytest.raises(SFrameError):
        receiver.unprotect(data, metadata)


@settings(max_examples=200, deadline=None)
@given(
    suite=st.sampled_from([GCM, CipherSuite.AES_256_GCM_SHA512_128]),
    kid=st.sampled_from([0, 7, 0xFF, 0x1234, MAX_VALUE]),
    edits=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 8),
)
def test_fuzz_mutated_frames_only_raise_sframe_error(
    suite: CipherSuite, kid: int, edits: list[tuple[int, int]], cut: int
) -> None:
    receiver = _fuzz_receiver(suite)
    original = SFrameSender(kid, KEY_A, suite, ctr=77).protect(b"frame" * 4)
    data = bytearray(original)
    for index, xor in edits:
        data[index % len(data)] ^= xor
    mutated = bytes(data[: len(data) - cut])
    assume(mutated != original)  # two edits of one byte can cancel out
    with pytest.raises(SFrameError):
        receiver.unprotect(mutated)


# --- the ratchet (RFC 9605 section 5.1) -----------------------------------------------------------


@pytest.mark.parametrize("suite", list(CipherSuite), ids=lambda s: s.name)
def test_ratchet_follows_the_rfc_formula(suite: CipherSuite) -> None:
    name = HASHES[suite]
    prk = hmac.new(b"", KEY_A, name).digest()
    expected = hmac.new(prk, b"SFrame 1.0 Ratchet\x01", name).digest()  # one block is Nh
    next_key = ratchet(KEY_A, suite)
    assert next_key == expected and len(next_key) == suite.nh
    assert ratchet(next_key, suite) != next_key
    kid = compose_kid(generation=3, step=1, r_bits=4)
    receiver = SFrameReceiver(suite)
    receiver.add_key(kid, ratchet(KEY_A, suite))
    assert receiver.unprotect(SFrameSender(kid, next_key, suite).protect(b"f")) == (kid, b"f")


def test_ratchet_kids() -> None:
    assert compose_kid(3, 1, 4) == 0x31
    assert compose_kid(3, 17, 4) == 0x31  # only the low R bits of the step travel
    assert split_kid(0x31, 4) == (3, 1)
    assert split_kid(MAX_VALUE, 64) == (0, MAX_VALUE)
    assert compose_kid(0, 5, 0) == 0 and split_kid(9, 0) == (9, 0)
    for generation, step, r_bits in ((1 << 60, 0, 4), (-1, 0, 4), (0, -1, 4), (0, 0, 65)):
        with pytest.raises(ValueError):
            compose_kid(generation, step, r_bits)
