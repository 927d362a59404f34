"""The SFrame cipher suites of RFC 9605 (section 4.5): their constants, HKDF and AEADs.

    suite                             id      hash     Nh  Nka  Nk  Nn  Nt
    AES_128_CTR_HMAC_SHA256_80        0x0001  SHA-256  32  16   48  12  10
    AES_128_CTR_HMAC_SHA256_64        0x0002  SHA-256  32  16   48  12   8
    AES_128_CTR_HMAC_SHA256_32        0x0003  SHA-256  32  16   48  12   4
    AES_128_GCM_SHA256_128            0x0004  SHA-256  32  n/a  16  12  16
    AES_256_GCM_SHA512_128            0x0005  SHA-512  64  n/a  32  12  16

The AES-CTR suites use the RFC's encrypt-then-MAC AEAD (section 4.5.1): the key is
``enc_key (Nka) || auth_key (Nh)``; AES-CTR starts at ``nonce || 0x00000000``; the tag is
HMAC(auth_key, len(aad) || len(ct) || Nt (8 bytes each, big-endian) || nonce || aad || ct)
truncated to Nt bytes. Short tags are for bandwidth-starved links only: prefer the GCM suites.

Every failure to open a ciphertext is one opaque :class:`SFrameError`, whatever its cause.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from voice.errors import SFrameError

__all__ = ["Aead", "CipherSuite", "hkdf_expand", "hkdf_extract", "new_aead"]

_FAILED = "the frame failed authentication"


@dataclass(frozen=True)
class _Params:
    hash_name: str  # hashlib's name, also the HMAC hash
    nh: int
    nka: int  # 0 for the GCM suites (no subkeys)
    nk: int
    nn: int
    nt: int


class CipherSuite(IntEnum):
    """The cipher suites RFC 9605 defines, by their IANA numbers (sent nowhere in SFrame: both
    sides must agree on the suite out of band, as part of the key they share)."""

    AES_128_CTR_HMAC_SHA256_80 = 0x0001
    AES_128_CTR_HMAC_SHA256_64 = 0x0002
    AES_128_CTR_HMAC_SHA256_32 = 0x0003
    AES_128_GCM_SHA256_128 = 0x0004
    AES_256_GCM_SHA512_128 = 0x0005

    @property
    def _params(self) -> _Params:
        return _PARAMS[self]

    @property
    def nh(self) -> int:
        """Hash output size in bytes (the size of a ratcheted base key)."""
        return self._params.nh

    @property
    def nk(self) -> int:
        """AEAD key size in bytes (for AES-CTR-HMAC, the encryption and the MAC key)."""
        return self._params.nk

    @property
    def nn(self) -> int:
        """AEAD nonce size in bytes."""
        return self._params.nn

    @property
    def nt(self) -> int:
        """Bytes the AEAD adds to a plaintext (its tag)."""
        return self._params.nt

    @property
    def is_gcm(self) -> bool:
        return self._params.nka == 0


_PARAMS = {
    CipherSuite.AES_128_CTR_HMAC_SHA256_80: _Params("sha256", 32, 16, 48, 12, 10),
    CipherSuite.AES_128_CTR_HMAC_SHA256_64: _Params("sha256", 32, 16, 48, 12, 8),
    CipherSuite.AES_128_CTR_HMAC_SHA256_32: _Params("sha256", 32, 16, 48, 12, 4),
    CipherSuite.AES_128_GCM_SHA256_128: _Params("sha256", 32, 0, 16, 12, 16),
    CipherSuite.AES_256_GCM_SHA512_128: _Params("sha512", 64, 0, 32, 12, 16),
}


def _hash(suite: CipherSuite) -> hashes.HashAlgorithm:
    return hashes.SHA512() if suite._params.hash_name == "sha512" else hashes.SHA256()


def hkdf_extract(suite: CipherSuite, ikm: bytes) -> bytes:
    """HKDF-Extract("", ikm) with the suite's hash (an empty salt, as RFC 9605 writes it)."""
    return HKDF.extract(_hash(suite), b"", ikm)


def hkdf_expand(suite: CipherSuite, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand(prk, info, length) with the suite's hash."""
    return HKDFExpand(algorithm=_hash(suite), length=length, info=info).derive(prk)


class Aead(Protocol):
    """An AEAD bound to one key. The tag is part of the ciphertext (RFC 5116)."""

    def encrypt(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes: ...

    def decrypt(self, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """The plaintext, or SFrameError (one opaque error) if the ciphertext does not open."""
        ...


class _Gcm:
    def __init__(self, key: bytes) -> None:
        self._aesgcm = AESGCM(key)

    def encrypt(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._aesgcm.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        if len(ciphertext) < 16:
            raise SFrameError(_FAILED)
        try:
            return self._aesgcm.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise SFrameError(_FAILED) from None


class _CtrHmac:
    """The AES-CTR + truncated HMAC AEAD of RFC 9605 section 4.5.1."""

    def __init__(self, suite: CipherSuite, key: bytes) -> None:
        nka = suite._params.nka
        self._enc_key = algorithms.AES(key[:nka])
        self._auth_key = key[nka:]
        self._hash_name = suite._params.hash_name
        self._nt = suite.nt

    def __repr__(self) -> str:  # never show the keys
        return f"<AES-CTR-HMAC AEAD, {self._nt}-byte tag>"

    def _ctr(self, nonce: bytes, data: bytes) -> bytes:
        counter = Cipher(self._enc_key, modes.CTR(nonce + bytes(4))).encryptor()
        return counter.update(data) + counter.finalize()

    def _tag(self, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
        lengths = b"".join(n.to_bytes(8, "big") for n in (len(aad), len(ct), self._nt))
        mac = hmac.new(self._auth_key, lengths + nonce + aad + ct, self._hash_name)
        return mac.digest()[: self._nt]

    def encrypt(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        ct = self._ctr(nonce, plaintext)
        return ct + self._tag(nonce, aad, ct)

    def decrypt(self, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        if len(ciphertext) < self._nt:
            raise SFrameError(_FAILED)
        ct, tag = ciphertext[: -self._nt], ciphertext[-self._nt :]
        if not hmac.compare_digest(tag, self._tag(nonce, aad, ct)):
            raise SFrameError(_FAILED)
        return self._ctr(nonce, ct)


def new_aead(suite: CipherSuite, key: bytes) -> Aead:
    """The suite's AEAD under ``key`` (exactly ``suite.nk`` bytes, else ValueError)."""
    if len(key) != suite.nk:
        raise ValueError(f"{suite.name} takes a {suite.nk}-byte key")
    if suite.is_gcm:
        return _Gcm(key)
    return _CtrHmac(suite, key)
