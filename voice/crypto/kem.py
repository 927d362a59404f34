"""ML-KEM-768 (FIPS 203) for the hybrid call key, through OpenSSL (``cryptography``).

The caller makes a key pair per call and sends the encapsulation key (1184 bytes) in its offer;
the callee encapsulates to it and sends the ciphertext (1088 bytes) in its ringing; both then
hold the same 32-byte shared secret, which goes into the call's HKDF beside the X25519 one
(keyschedule.py). A harvest-now-decrypt-later attacker who later breaks X25519 still lacks it.

The caller's key pair comes from a 64-byte FIPS 203 seed ``d || z`` drawn from the injected
rng (so the test vectors can pin it); our copy of the seed is wiped at once, and the secret then
lives only inside OpenSSL's key object, which the agreement drops after its one decapsulation or
when the call ends (OpenSSL cleanses ML-KEM key material when it frees a key). Encapsulation
randomness comes from OpenSSL; :data:`Encapsulate` is a parameter so the vectors can pin it.
Decapsulation never fails on a well-sized ciphertext (implicit rejection: a forged one gives a
pseudorandom secret, so the keys, never the SAS, differ). Never logged: seeds, shared secrets.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import mlkem

from voice.crypto._bytes import wipe
from voice.errors import BadPublicKey

__all__ = [
    "CIPHERTEXT_BYTES",
    "ENCAPSULATION_KEY_BYTES",
    "SEED_BYTES",
    "SHARED_BYTES",
    "DecapsulationKey",
    "Encapsulate",
    "decapsulate",
    "encapsulate",
    "encapsulation_key",
    "generate",
]

ENCAPSULATION_KEY_BYTES = 1184
CIPHERTEXT_BYTES = 1088
SHARED_BYTES = 32
SEED_BYTES = 64  # d || z: FIPS 203 ML-KEM.KeyGen_internal derives the key pair from it

Encapsulate = Callable[[bytes], tuple[bytes, bytes]]
"""encapsulation key -> (shared secret 32, ciphertext 1088); raises BadPublicKey."""
DecapsulationKey = mlkem.MLKEM768PrivateKey


def _private(seed: bytes) -> mlkem.MLKEM768PrivateKey:
    if len(seed) != SEED_BYTES:
        raise ValueError("an ML-KEM-768 seed is 64 bytes")
    try:
        return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
    except UnsupportedAlgorithm as exc:  # pragma: no cover - the pinned OpenSSL has ML-KEM
        raise RuntimeError("this OpenSSL has no ML-KEM-768") from exc


def encapsulation_key(seed: bytes) -> bytes:
    """The 1184-byte encapsulation key for a 64-byte seed (what the offer carries)."""
    return _private(seed).public_key().public_bytes_raw()


def encapsulate(key: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to the peer's key; refuse one of the wrong size or not reduced mod q
    (FIPS 203 7.2 input check) with BadPublicKey."""
    if not isinstance(key, bytes) or len(key) != ENCAPSULATION_KEY_BYTES:
        raise BadPublicKey(f"an ML-KEM-768 encapsulation key is {ENCAPSULATION_KEY_BYTES} bytes")
    try:
        public = mlkem.MLKEM768PublicKey.from_public_bytes(key)
    except ValueError:
        raise BadPublicKey("malformed ML-KEM-768 encapsulation key") from None
    shared, ciphertext = public.encapsulate()
    return shared, ciphertext


def decapsulate(key: DecapsulationKey, ciphertext: bytes) -> bytes:
    """The shared secret for ``ciphertext`` under ``key``.

    A ciphertext of the wrong size raises BadPublicKey; any other one gives a secret (implicit
    rejection), equal to the encapsulator's only if nobody changed the ciphertext.
    """
    if not isinstance(ciphertext, bytes) or len(ciphertext) != CIPHERTEXT_BYTES:
        raise BadPublicKey(f"an ML-KEM-768 ciphertext is {CIPHERTEXT_BYTES} bytes")
    return key.decapsulate(ciphertext)


def generate(rng: Callable[[int], bytes]) -> tuple[DecapsulationKey, bytes]:
    """A fresh key pair from a 64-byte seed drawn from ``rng``: (the key, the 1184-byte
    encapsulation key). Our copy of the seed is wiped before this returns."""
    raw = bytearray(rng(SEED_BYTES))
    if len(raw) != SEED_BYTES:
        raise ValueError("rng returned the wrong number of bytes")
    seed = bytes(raw)
    wipe(raw)
    try:
        key = _private(seed)
    finally:
        wipe(seed)
    return key, key.public_key().public_bytes_raw()
