"""Sealed envelopes: every client-to-client message, encrypted and authenticated end to end.

Wire format (all integers big-endian)::

    envelope  = version(1) = 0x01 || sender(32) || nonce(24) || box
    box       = crypto_box_easy(plaintext, nonce, X25519(recipient), X25519(sender))
                (XSalsa20-Poly1305: 16-byte tag then ciphertext, len(plaintext) + 16 bytes)
    plaintext = version(1) = 0x01 || sender(32) || recipient(32) || call_id(16)
                || seq(8) || timestamp_ms(8) || payload

``sender`` and ``recipient`` are Ed25519 identity public keys; the X25519 keys are their
libsodium conversions (``crypto_sign_ed25519_pk_to_curve25519`` / ``..._sk_to_curve25519``). The
sender key is in clear so the recipient knows which key to open with (the server knows it
anyway). Because the box key is the same in both directions, the plaintext repeats both identity
keys: that stops a reflected envelope (A->B sent back to A) and a sender field swapped for an
equivalent Ed25519 encoding. The header (call id, seq, timestamp) is only inside the box.

:func:`open_envelope` checks everything except freshness;
:class:`voice.crypto.replay.ReplayGuard` then checks replay, reordering and age. Both raise the
one opaque :class:`~voice.errors.BadEnvelope`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from nacl.bindings import crypto_box, crypto_box_open
from nacl.exceptions import CryptoError as NaclCryptoError

from voice.crypto.identity import Identity, x25519_public_of
from voice.crypto.keyschedule import CALL_ID_BYTES
from voice.errors import BadEnvelope, BadPublicKey

__all__ = [
    "ENVELOPE_OVERHEAD",
    "VERSION",
    "BadEnvelope",
    "EnvelopeHeader",
    "OpenedEnvelope",
    "open_envelope",
    "seal",
]

VERSION = 1
NONCE_BYTES = 24
TAG_BYTES = 16
_PLAIN_HEADER = 1 + 32 + 32 + CALL_ID_BYTES + 8 + 8  # 97
_OUTER_HEADER = 1 + 32 + NONCE_BYTES  # 57
ENVELOPE_OVERHEAD = _OUTER_HEADER + TAG_BYTES + _PLAIN_HEADER  # 170 bytes on top of the payload
_U64 = 1 << 64


@dataclass(frozen=True)
class EnvelopeHeader:
    """What every envelope carries besides its payload."""

    call_id: bytes  # 16 bytes, chosen by the caller at random
    seq: int  # uint64, counts up per sender within a call
    timestamp_ms: int  # uint64, sender's wall clock in milliseconds since the Unix epoch

    def __post_init__(self) -> None:
        if not isinstance(self.call_id, bytes) or len(self.call_id) != CALL_ID_BYTES:
            raise ValueError("call_id is 16 bytes")
        if not 0 <= self.seq < _U64 or not 0 <= self.timestamp_ms < _U64:
            raise ValueError("seq and timestamp_ms are unsigned 64-bit integers")

    def encode(self) -> bytes:
        return self.call_id + self.seq.to_bytes(8, "big") + self.timestamp_ms.to_bytes(8, "big")


@dataclass(frozen=True)
class OpenedEnvelope:
    sender_key: bytes  # Ed25519 identity key of the sender (check it against the contact book)
    header: EnvelopeHeader
    payload: bytes


def seal(
    sender: Identity,
    recipient_key: bytes,
    header: EnvelopeHeader,
    payload: bytes,
    *,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt and authenticate ``payload`` from ``sender`` to the identity ``recipient_key``.

    ``rng`` supplies the 24-byte nonce; leave it alone except to pin test vectors.
    """
    recipient_x = x25519_public_of(recipient_key)  # raises BadPublicKey
    nonce = rng(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("rng returned the wrong number of bytes")
    version = bytes([VERSION])
    plaintext = version + sender.public_key + recipient_key + header.encode() + payload
    sk = bytes(sender.x25519_private_key())
    try:
        box = crypto_box(plaintext, nonce, recipient_x, sk)
    except NaclCryptoError as exc:  # low-order recipient key: all-zero shared secret
        raise BadPublicKey("cannot seal to this key") from exc
    return version + sender.public_key + nonce + box


def open_envelope(recipient: Identity, data: bytes) -> OpenedEnvelope:
    """Decrypt and check an envelope addressed to ``recipient``.

    Raises BadEnvelope if it is malformed, tampered with, not for us, or inconsistent. Freshness
    (replay, order, age) is :class:`ReplayGuard`'s job.
    """
    if len(data) < _OUTER_HEADER + TAG_BYTES + _PLAIN_HEADER or data[0] != VERSION:
        raise BadEnvelope("bad envelope")
    sender_key = data[1:33]
    nonce = data[33:_OUTER_HEADER]
    box = data[_OUTER_HEADER:]
    try:
        sender_x = x25519_public_of(sender_key)
        plaintext = crypto_box_open(box, nonce, sender_x, bytes(recipient.x25519_private_key()))
    except (BadPublicKey, NaclCryptoError, ValueError, TypeError):
        raise BadEnvelope("bad envelope") from None
    if (
        plaintext[0] != VERSION
        or plaintext[1:33] != sender_key
        or plaintext[33:65] != recipient.public_key
    ):
        raise BadEnvelope("bad envelope")
    header = EnvelopeHeader(
        call_id=plaintext[65:81],
        seq=int.from_bytes(plaintext[81:89], "big"),
        timestamp_ms=int.from_bytes(plaintext[89:97], "big"),
    )
    return OpenedEnvelope(sender_key=sender_key, header=header, payload=plaintext[97:])
