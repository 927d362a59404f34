"""The one key derivation every secret of the protocol goes through, and its labels.

``derive(ikm, label, context, n) = HKDF-SHA256(salt=SALT, ikm=ikm,
info=lp(label) || lp(context), length=n)`` with ``lp`` the 4-byte big-endian length prefix.
One label per purpose and direction (magic-wormhole style), so no two outputs can collide.
"""

from __future__ import annotations

from voice.crypto._bytes import hkdf_sha256, lp

__all__ = [
    "LABEL_CM_CALLEE_TO_CALLER",
    "LABEL_CM_CALLER_TO_CALLEE",
    "LABEL_ENVELOPE_CALLEE_TO_CALLER",
    "LABEL_ENVELOPE_CALLER_TO_CALLEE",
    "LABEL_GCM_CALLEE_TO_CALLER",
    "LABEL_GCM_CALLER_TO_CALLEE",
    "LABEL_RETAINED",
    "LABEL_SAS",
    "SALT",
    "derive",
]

SALT = b"voice-e2e-v1"
LABEL_GCM_CALLER_TO_CALLEE = b"srtp AEAD_AES_256_GCM caller to callee"
LABEL_GCM_CALLEE_TO_CALLER = b"srtp AEAD_AES_256_GCM callee to caller"
LABEL_CM_CALLER_TO_CALLEE = b"srtp AES128_CM_SHA1_80 caller to callee"
LABEL_CM_CALLEE_TO_CALLER = b"srtp AES128_CM_SHA1_80 callee to caller"
LABEL_ENVELOPE_CALLER_TO_CALLEE = b"envelope caller to callee"
LABEL_ENVELOPE_CALLEE_TO_CALLER = b"envelope callee to caller"
LABEL_RETAINED = b"retained secret"
LABEL_SAS = b"sas"


def derive(ikm: bytes, label: bytes, context: bytes, length: int) -> bytes:
    return hkdf_sha256(ikm=ikm, salt=SALT, info=lp(label) + lp(context), length=length)
