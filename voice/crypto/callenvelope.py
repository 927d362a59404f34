"""Envelopes sealed with the call's own keys, once both sides have them (audit finding 10).

The identity keys seal a call's first messages (:mod:`voice.crypto.envelope`). Once the key
agreement ran, each side also holds a 32-byte envelope key per direction, derived with the SRTP
keys from the ephemeral X25519 secret and the transcript (``CallKeys.envelope_tx/rx``). The rest
of the call's messages are sealed with those keys, so a thief of an identity key who recorded
the call cannot read them, nor forge them to either side: they are as forward secret as the
audio. Wire format::

    envelope  = version(1) = 0x02 || key_id(8) || nonce(24) || secretbox(plaintext)
    plaintext = version(1) = 0x02 || call_id(16) || seq(8) || timestamp_ms(8) || payload
    key_id    = SHA-256("voice envelope key id" || key)[:8]

``secretbox`` is XSalsa20-Poly1305 (NaCl). The key id lets the receiver find the call without
trying every key; it says nothing about the key. The keys differ per direction, so an envelope
reflected back to its sender does not open. Only the peer of the call holds the key: the sender
is that peer. Freshness is still the replay guard's job.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from nacl.bindings import crypto_secretbox, crypto_secretbox_open
from nacl.exceptions import CryptoError as NaclCryptoError

from voice.crypto.envelope import EnvelopeHeader
from voice.crypto.keyschedule import CALL_ID_BYTES
from voice.errors import BadEnvelope

__all__ = ["VERSION", "call_key_id", "is_call_envelope", "key_id_of", "open_call", "seal_call"]

VERSION = 2
KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 24
TAG_BYTES = 16
_OUTER = 1 + KEY_ID_BYTES + NONCE_BYTES  # 33
_INNER = 1 + CALL_ID_BYTES + 8 + 8  # 33


def call_key_id(key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise ValueError("an envelope key is 32 bytes")
    return hashlib.sha256(b"voice envelope key id" + key).digest()[:KEY_ID_BYTES]


def is_call_envelope(data: bytes) -> bool:
    return len(data) >= _OUTER + TAG_BYTES + _INNER and data[0] == VERSION


def key_id_of(data: bytes) -> bytes:
    return data[1 : 1 + KEY_ID_BYTES]


def seal_call(
    key: bytes,
    header: EnvelopeHeader,
    payload: bytes,
    *,
    rng: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Seal ``payload`` with one direction's envelope key of a call."""
    nonce = rng(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("rng returned the wrong number of bytes")
    version = bytes([VERSION])
    box = crypto_secretbox(version + header.encode() + payload, nonce, bytes(key))
    return version + call_key_id(key) + nonce + box


def open_call(key: bytes, data: bytes) -> tuple[EnvelopeHeader, bytes]:
    """Open a call envelope with the peer's envelope key; one opaque BadEnvelope otherwise."""
    if not is_call_envelope(data) or key_id_of(data) != call_key_id(key):
        raise BadEnvelope("bad envelope")
    nonce = data[1 + KEY_ID_BYTES : _OUTER]
    try:
        plaintext = crypto_secretbox_open(data[_OUTER:], nonce, bytes(key))
    except (NaclCryptoError, ValueError, TypeError):
        raise BadEnvelope("bad envelope") from None
    if len(plaintext) < _INNER or plaintext[0] != VERSION:
        raise BadEnvelope("bad envelope")
    header = EnvelopeHeader(
        call_id=plaintext[1:17],
        seq=int.from_bytes(plaintext[17:25], "big"),
        timestamp_ms=int.from_bytes(plaintext[25:33], "big"),
    )
    return header, plaintext[_INNER:]
