"""The key schedule of a call, as pure functions: X25519 checks, commitment, transcript, keys.

``voice.crypto.keyagreement`` runs the three-message exchange (offer, answer, reveal) and calls
these; the formulas are in its docstring and in docs/protocol.md, Part 2. :func:`agree` is the
last step both roles share, so the caller's and the callee's keys cannot drift apart: it takes
the exchange named from the caller's point of view and the role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import CryptoError as NaclCryptoError

from voice.crypto import kdf
from voice.crypto._bytes import constant_time_equal, lp, sha256, wipe
from voice.crypto.continuity import CALLER, ContinuityResult, RetainedSecrets, resolve_continuity
from voice.crypto.kem import CIPHERTEXT_BYTES, ENCAPSULATION_KEY_BYTES, SHARED_BYTES
from voice.crypto.sas import Sas
from voice.crypto.versions import HYBRID, encode_list
from voice.errors import BadPublicKey

Rng = Callable[[int], bytes]
COMMIT_LABEL = b"voice commit v2"  # v2: the caller's version list and ML-KEM key bound too
TRANSCRIPT_LABEL = b"voice transcript v3"  # v2: usernames; v3: versions and ML-KEM values
CALL_ID_BYTES = 16
GCM_KEY_SALT_BYTES = 32 + 12
CM_KEY_SALT_BYTES = 16 + 14

_P = 2**255 - 19
# The Curve25519 points of small order (libsodium's blocklist), bit 255 cleared: 0, 1, the two
# points of order 8, p-1, and the non-canonical encodings p and p+1 of 0 and 1.
SMALL_ORDER_POINTS: tuple[bytes, ...] = (
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (_P - 1).to_bytes(32, "little"),
    _P.to_bytes(32, "little"),
    (_P + 1).to_bytes(32, "little"),
)


@dataclass(frozen=True)
class Answer:
    eph_b: bytes
    continuity_b: bytes


@dataclass(frozen=True)
class Reveal:
    eph_a: bytes
    continuity_a: bytes


@dataclass(eq=False)
class CallKeys:
    """Everything one side needs from the agreement. tx/rx are from this side's point of view."""

    srtp_gcm_tx: bytes = field(repr=False)  # AEAD_AES_256_GCM master key (32) || salt (12)
    srtp_gcm_rx: bytes = field(repr=False)
    srtp_cm_tx: bytes = field(repr=False)  # AES128_CM_SHA1_80 master key (16) || salt (14)
    srtp_cm_rx: bytes = field(repr=False)
    sas: Sas
    transcript_hash: bytes = field(repr=False)  # the SAS follows from it: do not log
    continuity: ContinuityResult
    next_retained: bytes = field(repr=False)  # kept at connect (earned_retained) or on verify
    envelope_tx: bytes = field(repr=False)  # 32-byte secretbox key for our call envelopes
    envelope_rx: bytes = field(repr=False)  # ... and for the peer's (voice.crypto.callenvelope)

    @property
    def continuity_warning(self) -> str | None:
        """A message to show the user when continuity failed (never ignore it silently)."""
        if self.continuity is not ContinuityResult.MISMATCH:
            return None
        return (
            "Key continuity mismatch: this contact does not hold the secret from your last "
            "verified call. Someone may be in the middle, or they reinstalled. Compare the "
            "SAS out loud before you trust this call."
        )

    def erase(self) -> None:
        """Zero the key material in place (best effort; every reference then reads zeros)."""
        for name in (
            "srtp_gcm_tx",
            "srtp_gcm_rx",
            "srtp_cm_tx",
            "srtp_cm_rx",
            "next_retained",
            "envelope_tx",
            "envelope_rx",
        ):
            wipe(getattr(self, name))


def check_x25519_public(key: bytes) -> None:
    """Refuse a malformed or small-order X25519 public key (raises BadPublicKey)."""
    if not isinstance(key, bytes) or len(key) != 32:
        raise BadPublicKey("an X25519 public key is 32 bytes")
    masked = key[:31] + bytes([key[31] & 0x7F])
    if any(constant_time_equal(masked, p) for p in SMALL_ORDER_POINTS):
        raise BadPublicKey("low-order X25519 public key")


def x25519_shared(secret: bytes, peer_public: bytes) -> bytes:
    """X25519 with both checks: small-order peer key, and all-zero (non-contributory) result."""
    check_x25519_public(peer_public)
    try:
        shared = crypto_scalarmult(secret, peer_public)
    except NaclCryptoError as exc:  # libsodium refuses an all-zero result
        raise BadPublicKey("non-contributory X25519 result") from exc
    if constant_time_equal(shared, bytes(32)):  # pragma: no cover - libsodium already refuses
        raise BadPublicKey("non-contributory X25519 result")
    return shared


def commitment_of(
    *,
    call_id: bytes,
    caller: bytes,
    callee: bytes,
    versions: tuple[int, ...],
    kem_key: bytes,
    eph_a: bytes,
    continuity_a: bytes,
) -> bytes:
    """The offer's commitment: to the caller's list and ML-KEM key (sent in the offer itself)
    and to ``eph_a`` and ``continuity_a`` (sent only in the reveal)."""
    return sha256(
        lp(COMMIT_LABEL)
        + lp(call_id)
        + lp(caller)
        + lp(callee)
        + lp(encode_list(versions))
        + lp(kem_key)
        + lp(eph_a)
        + lp(continuity_a)
    )


def encode_transcript(
    *,
    call_id: bytes,
    caller: bytes,
    callee: bytes,
    caller_name: str,
    callee_name: str,
    caller_versions: tuple[int, ...],
    callee_versions: tuple[int, ...],
    version: int,
    eph_a: bytes,
    eph_b: bytes,
    kem_key: bytes,
    kem_ciphertext: bytes,
    continuity_a: bytes,
    continuity_b: bytes,
    caller_description: bytes,
    callee_description: bytes,
) -> bytes:
    """The transcript bytes (docs/protocol.md, Part 2, section 4); ``th`` is their SHA-256.

    Each side puts in the lists as it sent or received them, so an edited list makes the two
    transcripts differ. ``kem_key`` is the offer's (empty unless it offered version 2);
    ``kem_ciphertext`` is empty unless version 2 was chosen.
    """
    parts = (
        call_id,
        caller,
        callee,
        _name_bytes(caller_name),
        _name_bytes(callee_name),
        encode_list(caller_versions),
        encode_list(callee_versions),
        bytes([version]),
        eph_a,
        eph_b,
        kem_key,
        kem_ciphertext,
        continuity_a,
        continuity_b,
        caller_description,
        callee_description,
    )
    return lp(TRANSCRIPT_LABEL) + b"".join(lp(p) for p in parts)


def new_ephemeral(rng: Rng) -> tuple[bytes, bytes]:
    """A fresh X25519 key pair; the secret is a private copy this module may wipe."""
    raw = bytearray(rng(32))
    if len(raw) != 32:
        raise ValueError("rng returned the wrong number of bytes")
    secret = bytes(raw)
    wipe(raw)
    return secret, crypto_scalarmult_base(secret)


def _name_bytes(name: str) -> bytes:
    """A username as the transcript holds it (UTF-8); an empty name would bind nobody."""
    if not isinstance(name, str) or not name:
        raise ValueError("a username is a non-empty string")
    return name.encode("utf-8")


def check_ids(me: bytes, peer: bytes, call_id: bytes, my_name: str, peer_name: str) -> None:
    if len(me) != 32 or len(peer) != 32:
        raise BadPublicKey("identity keys are 32 bytes")
    if me == peer:
        raise BadPublicKey("the peer's identity key is our own")
    if len(call_id) != CALL_ID_BYTES:
        raise ValueError("call_id is 16 bytes")
    _name_bytes(my_name)
    _name_bytes(peer_name)


def _derive_keys(
    *,
    dh: bytes,
    kem_shared: bytes,
    mixed: bytes | None,
    transcript: bytes,
    is_caller: bool,
    continuity: ContinuityResult,
    sas_bits: int,
) -> CallKeys:
    th = sha256(transcript)
    ikm = dh + kem_shared + (mixed or b"")  # fixed sizes (32, 32 or 0, 32 or 0): unambiguous
    try:
        gcm_ab = kdf.derive(ikm, kdf.LABEL_GCM_CALLER_TO_CALLEE, th, GCM_KEY_SALT_BYTES)
        gcm_ba = kdf.derive(ikm, kdf.LABEL_GCM_CALLEE_TO_CALLER, th, GCM_KEY_SALT_BYTES)
        cm_ab = kdf.derive(ikm, kdf.LABEL_CM_CALLER_TO_CALLEE, th, CM_KEY_SALT_BYTES)
        cm_ba = kdf.derive(ikm, kdf.LABEL_CM_CALLEE_TO_CALLER, th, CM_KEY_SALT_BYTES)
        retained = kdf.derive(ikm, kdf.LABEL_RETAINED, th, 32)
        env_ab = kdf.derive(ikm, kdf.LABEL_ENVELOPE_CALLER_TO_CALLEE, th, 32)
        env_ba = kdf.derive(ikm, kdf.LABEL_ENVELOPE_CALLEE_TO_CALLER, th, 32)
    finally:
        wipe(ikm)
    return CallKeys(
        srtp_gcm_tx=gcm_ab if is_caller else gcm_ba,
        srtp_gcm_rx=gcm_ba if is_caller else gcm_ab,
        srtp_cm_tx=cm_ab if is_caller else cm_ba,
        srtp_cm_rx=cm_ba if is_caller else cm_ab,
        sas=Sas.from_transcript_hash(th, sas_bits),
        transcript_hash=th,
        continuity=continuity,
        next_retained=retained,
        envelope_tx=env_ab if is_caller else env_ba,
        envelope_rx=env_ba if is_caller else env_ab,
    )


@dataclass(frozen=True)
class Exchange:
    """Everything both sides put into the transcript, named from the caller's point of view."""

    call_id: bytes
    caller: bytes
    callee: bytes
    caller_name: str
    callee_name: str
    caller_versions: tuple[int, ...]
    callee_versions: tuple[int, ...]
    version: int
    eph_a: bytes
    eph_b: bytes
    kem_key: bytes  # the caller's ML-KEM-768 encapsulation key (empty if it offered no v2)
    kem_ciphertext: bytes  # version 2: the callee's ML-KEM-768 ciphertext; else empty
    continuity_a: bytes
    continuity_b: bytes
    caller_description: bytes
    callee_description: bytes


def agree(
    x: Exchange,
    *,
    role: bytes,
    dh: bytes,
    kem_shared: bytes,
    retained: RetainedSecrets | None,
    sas_bits: int,
) -> CallKeys:
    """The last step both roles share: continuity, transcript, keys. Wipes ``dh`` and
    ``kem_shared`` (the ML-KEM secret: 32 bytes in version 2, empty in version 1)."""
    try:
        hybrid = x.version == HYBRID
        key_sizes = (ENCAPSULATION_KEY_BYTES,) if hybrid else (0, ENCAPSULATION_KEY_BYTES)
        if (
            len(kem_shared) != (SHARED_BYTES if hybrid else 0)
            or len(x.kem_ciphertext) != (CIPHERTEXT_BYTES if hybrid else 0)
            or len(x.kem_key) not in key_sizes
        ):
            raise BadPublicKey(f"ML-KEM values do not fit key-agreement version {x.version}")
        result, mixed = resolve_continuity(
            retained,
            x.continuity_b if role == CALLER else x.continuity_a,
            role=role,
            call_id=x.call_id,
            caller=x.caller,
            callee=x.callee,
        )
        transcript = encode_transcript(
            call_id=x.call_id,
            caller=x.caller,
            callee=x.callee,
            caller_name=x.caller_name,
            callee_name=x.callee_name,
            caller_versions=x.caller_versions,
            callee_versions=x.callee_versions,
            version=x.version,
            eph_a=x.eph_a,
            eph_b=x.eph_b,
            kem_key=x.kem_key,
            kem_ciphertext=x.kem_ciphertext,
            continuity_a=x.continuity_a,
            continuity_b=x.continuity_b,
            caller_description=x.caller_description,
            callee_description=x.callee_description,
        )
        return _derive_keys(
            dh=dh,
            kem_shared=kem_shared,
            mixed=mixed,
            transcript=transcript,
            is_caller=role == CALLER,
            continuity=result,
            sas_bits=sas_bits,
        )
    finally:
        wipe(dh)
        wipe(kem_shared)
