"""Byte helpers shared by the crypto modules: length-prefixed encoding, HKDF, best-effort wipe.

Kept tiny and dependency-free so every derivation in ``docs/protocol.md`` maps to one function.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import platform
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["constant_time_equal", "hkdf_sha256", "hmac_sha256", "lp", "sha256", "wipe"]

_BYTES_HEADER = sys.getsizeof(b"") - 1  # offset of the data inside a CPython bytes object


def lp(data: bytes) -> bytes:
    """Length-prefix ``data``: 4-byte big-endian length, then the bytes (same as the login)."""
    return len(data).to_bytes(4, "big") + data


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def hkdf_sha256(*, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256 (extract with ``salt``, expand with ``info``)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def wipe(buf: bytes | bytearray) -> None:
    """Overwrite a secret with zeros, best effort.

    A ``bytearray`` is zeroed in place. A ``bytes`` object is immutable in Python, so on CPython
    its buffer is zeroed with ``ctypes.memset``; every reference to that object then reads zeros.
    Only call this on ``bytes`` this package created (never on a caller's or an interned object).
    Copies made elsewhere (inside libsodium, OpenSSL, the allocator, swap) are out of reach: this
    narrows the window a memory dump can recover a key, it does not guarantee erasure.
    """
    if isinstance(buf, bytearray):
        buf[:] = bytes(len(buf))
        return
    if type(buf) is bytes and len(buf) > 1 and platform.python_implementation() == "CPython":
        ctypes.memset(id(buf) + _BYTES_HEADER, 0, len(buf))
