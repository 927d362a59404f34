"""The committed vectors in tests/vectors/ still match the code, and a second implementation.

The second implementation uses other libraries where it can (OpenSSL X25519 through
``cryptography``, HKDF written out with ``hmac``, pynacl's high-level Box, the transcript and
commitment spelled out byte by byte) so that a vector encoding a mistake shared by generator
and code would still be caught. ML-KEM-768 has one implementation here (OpenSSL): the hybrid
vectors pin the key pair from its seed and the secret the recorded ciphertext decapsulates to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl.public import Box, PublicKey
from nacl.signing import SigningKey

from voice.crypto.envelope import open_envelope
from voice.crypto.identity import Identity
from voice.crypto.wordlists import EMOJI, WORDS

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "generate_vectors", VECTORS / "generate_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def lp(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def hkdf(ikm: bytes, salt: bytes, info: bytes, n: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < n:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:n]


def test_committed_vectors_match_the_generator() -> None:
    built = _generator().build()
    for name, text in built.items():
        assert (VECTORS / name).read_text(encoding="utf-8") == text, f"{name} is stale"


def test_identity_vectors() -> None:
    for case in load("identity.json")["cases"]:
        sk = SigningKey(bytes.fromhex(case["seed"]))
        pub = bytes(sk.verify_key)
        assert pub.hex() == case["public_key"]
        assert bytes(sk.verify_key.to_curve25519_public_key()).hex() == case["x25519_public_key"]
        digest = hashlib.sha256(pub).digest()
        assert case["fingerprint_machine"] == "ed25519:" + digest.hex()
        b32 = base64.b32encode(digest).decode().rstrip("=")
        assert case["fingerprint_human"].replace(" ", "") == b32


def test_kdf_vectors_independently() -> None:
    doc = load("kdf.json")
    salt = doc["salt"].encode()
    for case in doc["derive"]:
        info = lp(case["label"].encode()) + lp(bytes.fromhex(case["context"]))
        expect = hkdf(bytes.fromhex(case["ikm"]), salt, info, case["length"])
        assert expect.hex() == case["output"]


AGREEMENTS = [("kdf.json", i) for i in range(4)] + [("hybrid.json", i) for i in range(3)]


@pytest.mark.parametrize(("file", "index"), AGREEMENTS)
def test_agreement_vectors_independently(file: str, index: int) -> None:
    case = load(file)["agreements"][index]
    salt = load(file)["salt"].encode()
    i, o = case["inputs"], case["outputs"]
    h = bytes.fromhex
    eph_a_sk = X25519PrivateKey.from_private_bytes(h(i["eph_a_secret"]))
    eph_b_sk = X25519PrivateKey.from_private_bytes(h(i["eph_b_secret"]))
    assert eph_a_sk.public_key().public_bytes_raw().hex() == o["eph_a"]
    assert eph_b_sk.public_key().public_bytes_raw().hex() == o["eph_b"]
    dh = eph_a_sk.exchange(X25519PublicKey.from_public_bytes(h(o["eph_b"])))
    assert dh == eph_b_sk.exchange(X25519PublicKey.from_public_bytes(h(o["eph_a"])))
    assert dh.hex() == o["x25519_shared"]
    # versions: the highest both lists hold; ML-KEM-768 from the 64-byte seed d || z (FIPS 203)
    caller_versions, callee_versions = bytes(i["caller_versions"]), bytes(i["callee_versions"])
    version = max(set(caller_versions) & set(callee_versions))
    assert version == o["version"]
    kem_key, kem_shared = b"", b""
    if 2 in caller_versions:
        dk = MLKEM768PrivateKey.from_seed_bytes(h(i["kem_seed"]))
        kem_key = dk.public_key().public_bytes_raw()
        assert i["kem_seed"] == i["caller_rng_stream"][1]  # drawn right after the X25519 secret
    assert kem_key.hex() == o["kem_key"]
    if version == 2:
        assert len(h(i["kem_ciphertext"])) == 1088
        kem_shared = dk.decapsulate(h(i["kem_ciphertext"]))
    else:
        assert i["kem_ciphertext"] == ""
    assert kem_shared.hex() == o["kem_shared"]
    ids = lp(h(i["call_id"])) + lp(h(i["caller_identity"])) + lp(h(i["callee_identity"]))
    commit = hashlib.sha256(
        lp(b"voice commit v2")
        + ids
        + lp(caller_versions)
        + lp(kem_key)
        + lp(h(o["eph_a"]))
        + lp(h(o["continuity_a"]))
    ).digest()
    assert commit.hex() == o["commitment"]
    names = lp(i["caller_name"].encode()) + lp(i["callee_name"].encode())
    transcript = lp(b"voice transcript v3") + ids + names
    transcript += lp(caller_versions) + lp(callee_versions) + lp(bytes([version]))
    transcript += lp(h(o["eph_a"])) + lp(h(o["eph_b"]))
    transcript += lp(kem_key) + lp(h(i["kem_ciphertext"]))
    transcript += lp(h(o["continuity_a"])) + lp(h(o["continuity_b"]))
    transcript += lp(h(i["caller_description"])) + lp(h(i["callee_description"]))
    assert transcript.hex() == o["transcript"]
    th = hashlib.sha256(transcript).digest()
    assert th.hex() == o["transcript_hash"]
    # continuity: which secret (if any) both sides share, tokens per the doc
    mixed = b""
    if o["caller_continuity"] == "match":
        caller_rs = [v for v in i["caller_retained"].values()]
        callee_rs = [v for v in i["callee_retained"].values()]
        pairs = [(a, b) for a in (0, 1) for b in (0, 1)]
        shared = next(
            caller_rs[a] for a, b in pairs if caller_rs[a] and caller_rs[a] == callee_rs[b]
        )
        mixed = h(shared)
        token = hmac.new(
            mixed, lp(b"voice continuity v1") + lp(b"caller") + ids, hashlib.sha256
        ).digest()
        assert token.hex() in o["continuity_a"]
    ikm = dh + kem_shared + mixed
    labels = {
        "caller_to_callee_gcm": (b"srtp AEAD_AES_256_GCM caller to callee", 44),
        "callee_to_caller_gcm": (b"srtp AEAD_AES_256_GCM callee to caller", 44),
        "caller_to_callee_cm": (b"srtp AES128_CM_SHA1_80 caller to callee", 30),
        "callee_to_caller_cm": (b"srtp AES128_CM_SHA1_80 callee to caller", 30),
        "next_retained": (b"retained secret", 32),
        "caller_to_callee_envelope": (b"envelope caller to callee", 32),
        "callee_to_caller_envelope": (b"envelope callee to caller", 32),
    }
    for key, (label, n) in labels.items():
        assert hkdf(ikm, salt, lp(label) + lp(th), n).hex() == o[key], key
        if kem_shared:  # version 2: neither secret alone gives the key
            assert hkdf(dh + mixed, salt, lp(label) + lp(th), n).hex() != o[key]
            assert hkdf(kem_shared + mixed, salt, lp(label) + lp(th), n).hex() != o[key]
    sas_raw = int.from_bytes(hkdf(th, salt, lp(b"sas") + lp(b""), 8), "big")
    assert sas_raw >> (64 - i["sas_bits"]) == o["sas_value"]


def test_hybrid_vectors_cover_what_they_claim() -> None:
    versions = [c["outputs"]["version"] for c in load("hybrid.json")["agreements"]]
    assert versions == [2, 2, 2]
    assert {c["outputs"]["version"] for c in load("kdf.json")["agreements"]} == {1}
    continuity = [c["outputs"]["caller_continuity"] for c in load("hybrid.json")["agreements"]]
    assert continuity == ["none", "match", "none"]


def test_sas_vectors_independently() -> None:
    doc = load("sas.json")
    salt = load("kdf.json")["salt"].encode()
    for case in doc["cases"]:
        raw = hkdf(bytes.fromhex(case["transcript_hash"]), salt, lp(b"sas") + lp(b""), 8)
        assert raw.hex() == case["sas_bytes"]
        bits, value = case["bits"], int.from_bytes(raw, "big") >> (64 - case["bits"])
        assert value == case["value"]
        n = -(-bits // 8)
        word_bytes = (value << (8 * n - bits)).to_bytes(n, "big")
        assert case["words"] == [WORDS[b] for b in word_bytes]
        m = -(-bits // 6)
        v = value << (6 * m - bits)
        groups = [(v >> (6 * (m - 1 - k))) & 63 for k in range(m)]
        assert case["emoji"] == [EMOJI[g][0] for g in groups]
        assert case["emoji_names"] == [EMOJI[g][1] for g in groups]


def test_envelope_vectors_independently() -> None:
    for case in load("envelope.json")["cases"]:
        h = bytes.fromhex
        data = h(case["envelope"])
        sender_sk = SigningKey(h(case["sender_seed"])).to_curve25519_private_key()
        recipient_sk = SigningKey(h(case["recipient_seed"])).to_curve25519_private_key()
        assert data[0] == 1 and data[1:33].hex() == case["sender_key"]
        nonce = data[33:57]
        assert nonce.hex() == case["nonce"]
        box = Box(recipient_sk, PublicKey(bytes(sender_sk.public_key)))
        plain = box.decrypt(data[57:], nonce)
        expect = (
            b"\x01"
            + h(case["sender_key"])
            + h(case["recipient_key"])
            + h(case["call_id"])
            + case["seq"].to_bytes(8, "big")
            + case["timestamp_ms"].to_bytes(8, "big")
            + h(case["payload"])
        )
        assert plain == expect
        opened = open_envelope(Identity.from_seed(h(case["recipient_seed"])), data)
        assert opened.payload.hex() == case["payload"]
