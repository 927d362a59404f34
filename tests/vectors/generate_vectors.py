"""Build the e2e crypto test vectors from fixed inputs, and check or rewrite the JSON files.

    .venv/bin/python tests/vectors/generate_vectors.py          # check: exit 1 if any differs
    .venv/bin/python tests/vectors/generate_vectors.py --write  # rewrite the files

All randomness is pinned: the bytes an ``rng`` returns come from ``stream(name)`` =
SHA-256(name || 0) || SHA-256(name || 1) || ..., consumed in call order, and every consumed
value (ephemeral secrets, ML-KEM seeds, random continuity slots, nonces) is also written out in
the vectors. See docs/protocol.md for what each field means.

One exception: OpenSSL's ML-KEM encapsulation takes no seed, so the callee's ciphertext of each
hybrid case (hybrid.json, version 2) is an *input*, recorded once from a real encapsulation and
read back from the committed file on every later run (``--new-ciphertexts`` records new ones).
The vector pins the shared secret it decapsulates to under the caller's seed, and the test
checks that with OpenSSL's decapsulation.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.bindings import crypto_scalarmult

from voice.crypto import kdf, kem
from voice.crypto.continuity import RetainedSecrets
from voice.crypto.envelope import EnvelopeHeader, seal
from voice.crypto.identity import Identity
from voice.crypto.keyagreement import (
    CalleeKeyAgreement,
    CallerKeyAgreement,
    encode_transcript,
)
from voice.crypto.sas import Sas, sas_bytes

HERE = Path(__file__).resolve().parent
FILES = ("identity.json", "kdf.json", "hybrid.json", "sas.json", "envelope.json")
NEW_CIPHERTEXTS = "--new-ciphertexts" in sys.argv


class PinnedRng:
    """An rng that returns a fixed byte stream and records what it handed out."""

    def __init__(self, name: str) -> None:
        self._name = name.encode()
        self._counter = 0
        self._buffer = b""
        self.taken: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = self._name + self._counter.to_bytes(4, "big")
            self._buffer += hashlib.sha256(block).digest()
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        self.taken.append(out)
        return out


def seed(name: str) -> bytes:
    return hashlib.sha256(b"voice vector seed " + name.encode()).digest()


def identity_vectors() -> dict[str, Any]:
    cases = []
    for name in ("alice", "bob", "carol"):
        ident = Identity.from_seed(seed(name))
        cases.append(
            {
                "seed": seed(name).hex(),
                "public_key": ident.public_key.hex(),
                "x25519_public_key": ident.x25519_public_key.hex(),
                "fingerprint_machine": ident.fingerprint.machine,
                "fingerprint_human": ident.fingerprint.human,
            }
        )
    return {"description": "Ed25519 seed -> public key -> fingerprints", "cases": cases}


def recorded_ciphertext(name: str) -> bytes | None:
    """The ML-KEM ciphertext recorded for hybrid case ``name`` (None: record a new one)."""
    path = HERE / "hybrid.json"
    if NEW_CIPHERTEXTS or not path.exists():
        return None
    for case in json.loads(path.read_text(encoding="utf-8"))["agreements"]:
        if case["name"] == name:
            return bytes.fromhex(case["inputs"]["kem_ciphertext"])
    return None


def _agreement_case(
    name: str,
    *,
    caller_retained: RetainedSecrets | None,
    callee_retained: RetainedSecrets | None,
    caller_versions: tuple[int, ...] = (1,),
    callee_versions: tuple[int, ...] = (1,),
    sas_bits: int = 24,
) -> dict[str, Any]:
    alice, bob = Identity.from_seed(seed("alice")), Identity.from_seed(seed("bob"))
    call_id = hashlib.sha256(b"call id " + name.encode()).digest()[:16]
    caller_name, callee_name = "alice", "bob"  # the usernames both sides agree on
    caller_desc = b'{"ice":"caller","ssrc":1111}'
    callee_desc = b'{"ice":"callee","ssrc":2222}'
    rng_a, rng_b = PinnedRng(f"{name} caller"), PinnedRng(f"{name} callee")
    recorded = recorded_ciphertext(name)

    caller = CallerKeyAgreement(
        me=alice.public_key,
        peer=bob.public_key,
        call_id=call_id,
        my_name=caller_name,
        peer_name=callee_name,
        retained=caller_retained,
        rng=rng_a,
        sas_bits=sas_bits,
        versions=caller_versions,
    )
    kem_seed = rng_a.taken[1] if 2 in caller_versions else b""

    def encapsulate(key: bytes) -> tuple[bytes, bytes]:
        """OpenSSL's encapsulation the first time (the one unpinned step, see above); after
        that the recorded ciphertext, with the secret it carries (decapsulated: we hold the
        caller's seed)."""
        if recorded is None:
            return kem.encapsulate(key)
        return kem.decapsulate(kem.DecapsulationKey.from_seed_bytes(kem_seed), recorded), recorded

    callee = CalleeKeyAgreement(
        me=bob.public_key,
        peer=alice.public_key,
        call_id=call_id,
        commitment=caller.commitment,
        caller_versions=caller.versions,
        kem_key=caller.kem_key,
        my_name=callee_name,
        peer_name=caller_name,
        retained=callee_retained,
        rng=rng_b,
        sas_bits=sas_bits,
        versions=callee_versions,
        encapsulate=encapsulate,
    )
    answer = callee.answer()
    version, ciphertext = callee.version, callee.kem_ciphertext
    decapsulated = (
        kem.decapsulate(kem.DecapsulationKey.from_seed_bytes(kem_seed), ciphertext)
        if (version == 2)
        else b""
    )
    reveal = caller.receive_answer(
        eph_b=answer.eph_b,
        continuity_b=answer.continuity_b,
        caller_description=caller_desc,
        callee_description=callee_desc,
        callee_versions=callee.versions,
        version=version,
        kem_ciphertext=ciphertext,
    )
    ka = caller.keys()
    transcript = encode_transcript(
        call_id=call_id,
        caller=alice.public_key,
        callee=bob.public_key,
        caller_name=caller_name,
        callee_name=callee_name,
        caller_versions=caller.versions,
        callee_versions=callee.versions,
        version=version,
        eph_a=reveal.eph_a,
        eph_b=answer.eph_b,
        kem_key=caller.kem_key,
        kem_ciphertext=ciphertext,
        continuity_a=reveal.continuity_a,
        continuity_b=answer.continuity_b,
        caller_description=caller_desc,
        callee_description=callee_desc,
    )
    kb = callee.receive_reveal(
        eph_a=reveal.eph_a,
        continuity_a=reveal.continuity_a,
        caller_description=caller_desc,
        callee_description=callee_desc,
    )
    assert ka.srtp_gcm_tx == kb.srtp_gcm_rx and ka.sas == kb.sas

    def rs(r: RetainedSecrets | None) -> dict[str, str | None]:
        r = r or RetainedSecrets()
        return {
            "current": r.current.hex() if r.current else None,
            "previous": r.previous.hex() if r.previous else None,
        }

    inputs: dict[str, Any] = {
        "caller_seed": seed("alice").hex(),
        "callee_seed": seed("bob").hex(),
        "caller_identity": alice.public_key.hex(),
        "callee_identity": bob.public_key.hex(),
        "caller_name": caller_name,
        "callee_name": callee_name,
        "call_id": call_id.hex(),
        "caller_versions": list(caller.versions),
        "callee_versions": list(callee.versions),
        "caller_rng_stream": [t.hex() for t in rng_a.taken],
        "callee_rng_stream": [t.hex() for t in rng_b.taken],
        "eph_a_secret": rng_a.taken[0].hex(),
        "eph_b_secret": rng_b.taken[0].hex(),
        "kem_seed": kem_seed.hex(),
        "kem_ciphertext": ciphertext.hex(),
        "caller_retained": rs(caller_retained),
        "callee_retained": rs(callee_retained),
        "caller_description": caller_desc.hex(),
        "callee_description": callee_desc.hex(),
        "sas_bits": sas_bits,
    }
    return {
        "name": name,
        "inputs": inputs,
        "outputs": {
            "version": version,
            "eph_a": reveal.eph_a.hex(),
            "eph_b": answer.eph_b.hex(),
            "kem_key": caller.kem_key.hex(),
            "continuity_a": reveal.continuity_a.hex(),
            "continuity_b": answer.continuity_b.hex(),
            "commitment": caller.commitment.hex(),
            "transcript": transcript.hex(),
            "x25519_shared": crypto_scalarmult(rng_a.taken[0], answer.eph_b).hex(),
            "kem_shared": decapsulated.hex(),
            "transcript_hash": ka.transcript_hash.hex(),
            "caller_continuity": ka.continuity.value,
            "callee_continuity": kb.continuity.value,
            "caller_to_callee_gcm": ka.srtp_gcm_tx.hex(),
            "callee_to_caller_gcm": ka.srtp_gcm_rx.hex(),
            "caller_to_callee_cm": ka.srtp_cm_tx.hex(),
            "callee_to_caller_cm": ka.srtp_cm_rx.hex(),
            "next_retained": ka.next_retained.hex(),
            "caller_to_callee_envelope": ka.envelope_tx.hex(),
            "callee_to_caller_envelope": ka.envelope_rx.hex(),
            "sas_value": ka.sas.value,
            "sas_words": list(ka.sas.words),
            "sas_emoji": list(ka.sas.emoji),
        },
    }


def kdf_vectors() -> dict[str, Any]:
    ikm = hashlib.sha256(b"voice vector ikm").digest()
    context = hashlib.sha256(b"voice vector context").digest()
    labels = [
        (kdf.LABEL_GCM_CALLER_TO_CALLEE, 44),
        (kdf.LABEL_GCM_CALLEE_TO_CALLER, 44),
        (kdf.LABEL_CM_CALLER_TO_CALLEE, 30),
        (kdf.LABEL_CM_CALLEE_TO_CALLER, 30),
        (kdf.LABEL_RETAINED, 32),
        (kdf.LABEL_ENVELOPE_CALLER_TO_CALLEE, 32),
        (kdf.LABEL_ENVELOPE_CALLEE_TO_CALLER, 32),
        (kdf.LABEL_SAS, 8),
    ]
    derive_cases = [
        {
            "ikm": ikm.hex(),
            "label": label.decode(),
            "context": context.hex(),
            "length": n,
            "output": kdf.derive(ikm, label, context, n).hex(),
        }
        for label, n in labels
    ]
    rs_shared = hashlib.sha256(b"retained shared").digest()
    rs_old = hashlib.sha256(b"retained old").digest()
    rs_other = hashlib.sha256(b"retained other").digest()
    agreements = [
        _agreement_case("first call", caller_retained=None, callee_retained=None),
        _agreement_case(
            "continuity match",
            caller_retained=RetainedSecrets(rs_shared, rs_old),
            callee_retained=RetainedSecrets(rs_shared, rs_old),
        ),
        _agreement_case(
            "continuity match on previous",
            caller_retained=RetainedSecrets(rs_shared, rs_old),
            callee_retained=RetainedSecrets(rs_old, None),
        ),
        _agreement_case(
            "continuity mismatch",
            caller_retained=RetainedSecrets(rs_shared, None),
            callee_retained=RetainedSecrets(rs_other, None),
        ),
    ]
    return {
        "description": (
            "derive() = HKDF-SHA256(salt, ikm, lp(label)||lp(context)); full agreements of "
            "key-agreement version 1 (X25519 alone; the hybrid ones are in hybrid.json)"
        ),
        "salt": kdf.SALT.decode(),
        "derive": derive_cases,
        "agreements": agreements,
    }


def hybrid_vectors() -> dict[str, Any]:
    rs_shared = hashlib.sha256(b"retained shared").digest()
    rs_old = hashlib.sha256(b"retained old").digest()
    hybrid = {"caller_versions": (2,), "callee_versions": (2,)}
    agreements = [
        _agreement_case("hybrid first call", caller_retained=None, callee_retained=None, **hybrid),
        _agreement_case(
            "hybrid continuity match",
            caller_retained=RetainedSecrets(rs_shared, rs_old),
            callee_retained=RetainedSecrets(rs_shared, rs_old),
            **hybrid,
        ),
        _agreement_case(
            "hybrid chosen from 1 and 2",
            caller_retained=None,
            callee_retained=None,
            caller_versions=(1, 2),
            callee_versions=(1, 2),
        ),
    ]
    return {
        "description": (
            "key-agreement version 2: X25519 + ML-KEM-768 (FIPS 203), ikm = dh || kem_shared || "
            "rs; the ML-KEM key pair comes from kem_seed (d || z), the ciphertext is a recorded "
            "input (see generate_vectors.py)"
        ),
        "salt": kdf.SALT.decode(),
        "agreements": agreements,
    }


def sas_vectors() -> dict[str, Any]:
    cases = []
    for i, bits in enumerate((24, 24, 24, 20, 32, 8, 64)):
        th = hashlib.sha256(b"voice vector transcript " + bytes([i])).digest()
        sas = Sas.from_transcript_hash(th, bits)
        cases.append(
            {
                "transcript_hash": th.hex(),
                "bits": bits,
                "sas_bytes": sas_bytes(th).hex(),
                "value": sas.value,
                "words": list(sas.words),
                "emoji": list(sas.emoji),
                "emoji_names": list(sas.emoji_names),
                "digits": sas.digits,
            }
        )
    return {"description": "transcript hash -> SAS value and renderings", "cases": cases}


def envelope_vectors() -> dict[str, Any]:
    alice, bob = Identity.from_seed(seed("alice")), Identity.from_seed(seed("bob"))
    cases = []
    for i, payload in enumerate((b"", b'{"type":"offer"}', bytes(range(256)))):
        header = EnvelopeHeader(
            call_id=hashlib.sha256(b"envelope call " + bytes([i])).digest()[:16],
            seq=i * 1000 + 7,
            timestamp_ms=1_700_000_000_000 + i,
        )
        rng = PinnedRng(f"envelope {i}")
        data = seal(alice, bob.public_key, header, payload, rng=rng)
        cases.append(
            {
                "sender_seed": seed("alice").hex(),
                "recipient_seed": seed("bob").hex(),
                "sender_key": alice.public_key.hex(),
                "recipient_key": bob.public_key.hex(),
                "call_id": header.call_id.hex(),
                "seq": header.seq,
                "timestamp_ms": header.timestamp_ms,
                "payload": payload.hex(),
                "nonce": rng.taken[0].hex(),
                "envelope": data.hex(),
            }
        )
    return {
        "description": "seal(sender, recipient, header, payload) with a fixed nonce",
        "cases": cases,
    }


BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "identity.json": identity_vectors,
    "kdf.json": kdf_vectors,
    "hybrid.json": hybrid_vectors,
    "sas.json": sas_vectors,
    "envelope.json": envelope_vectors,
}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def build() -> dict[str, str]:
    return {name: render(builder()) for name, builder in BUILDERS.items()}


def main(argv: list[str]) -> int:
    built = build()
    if "--write" in argv or "--new-ciphertexts" in argv:
        for name, text in built.items():
            (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {', '.join(built)}")
        return 0
    stale = [n for n, t in built.items() if (HERE / n).read_text(encoding="utf-8") != t]
    print("vectors differ: " + ", ".join(stale) if stale else "vectors match")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
