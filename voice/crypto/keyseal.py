"""An identity seed sealed under a passphrase: Argon2id, then XChaCha20-Poly1305 (libsodium).

One format with two uses, told apart by its first line: ``voice-identity-locked-v1`` is an
identity key file protected at rest (:mod:`voice.crypto.identity`), ``voice-identity-backup-v1``
an exported backup (:mod:`voice.crypto.backup`). ASCII, LF line ends, exactly four lines::

    voice-identity-backup-v1
    public <base64: the 32-byte Ed25519 public key>
    argon2id13 <opslimit> <memlimit, bytes> <base64: 16-byte salt>
    sealed <base64: nonce (24) || XChaCha20-Poly1305 ciphertext of the 32-byte seed (32 + 16)>

* ``key = crypto_pwhash(32, passphrase, salt, opslimit, memlimit, ALG_ARGON2ID13)``; the
  passphrase is its Unicode NFC form in UTF-8.
* ``sealed = nonce || crypto_aead_xchacha20poly1305_ietf_encrypt(seed, ad, nonce, key)`` with a
  random nonce, and as associated data ``ad`` the first three lines, byte for byte with their
  line ends: changing any byte of the file fails the tag. After opening, the seed must give the
  public key of line 2.
* Base64 is standard, padded and canonical; integers are decimal without leading zeros. Bounds,
  so that a hostile file cannot stall or exhaust the reader: 1 <= opslimit <= 10 and
  8 KiB <= memlimit <= 1 GiB. We write libsodium's MODERATE cost (3 passes over 256 MiB, about
  half a second), and a new salt and nonce each time.

Every way a sealed file can fail to open (a wrong passphrase; any byte changed, missing or
added; another format) raises one error, :class:`~voice.errors.WrongPassphrase`: a wrong
passphrase and a damaged file cannot be told apart anyway. Line 2 can be read without the
passphrase (:func:`sealed_public_key`) to show whose key it is; it is authenticated only when the
file is opened.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import unicodedata
from dataclasses import dataclass

from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.pwhash import argon2id
from nacl.secret import Aead
from nacl.signing import SigningKey

from voice.errors import WrongPassphrase

__all__ = [
    "BACKUP_MAGIC",
    "DEFAULT_KDF",
    "LOCKED_MAGIC",
    "KdfParams",
    "open_seed",
    "seal_seed",
    "sealed_public_key",
]

LOCKED_MAGIC = "voice-identity-locked-v1"
BACKUP_MAGIC = "voice-identity-backup-v1"
_KDF_NAME = "argon2id13"
_SALT_BYTES = argon2id.SALTBYTES  # 16
_SEALED_BYTES = Aead.NONCE_SIZE + 32 + Aead.MACBYTES  # 24 + 32 + 16
MAX_SEALED_SIZE = 1024  # the format is about 300 bytes
_MAX_OPSLIMIT = 10
_MAX_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE  # 1 GiB


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: passes over ``memlimit`` bytes (libsodium's opslimit and memlimit)."""

    opslimit: int = argon2id.OPSLIMIT_MODERATE
    memlimit: int = argon2id.MEMLIMIT_MODERATE

    def __post_init__(self) -> None:
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= _MAX_OPSLIMIT:
            raise ValueError(f"opslimit must be {argon2id.OPSLIMIT_MIN}..{_MAX_OPSLIMIT}")
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= _MAX_MEMLIMIT:
            raise ValueError(f"memlimit must be {argon2id.MEMLIMIT_MIN}..{_MAX_MEMLIMIT} bytes")


DEFAULT_KDF = KdfParams()
FAST_KDF_FOR_TESTS = KdfParams(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)


def _key(passphrase: str, salt: bytes, kdf: KdfParams) -> bytes:
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return argon2id.kdf(Aead.KEY_SIZE, secret, salt, opslimit=kdf.opslimit, memlimit=kdf.memlimit)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _header(magic: str, public_key: bytes, kdf: KdfParams, salt: bytes) -> bytes:
    return (
        f"{magic}\npublic {_b64(public_key)}\n"
        f"{_KDF_NAME} {kdf.opslimit} {kdf.memlimit} {_b64(salt)}\n"
    ).encode("ascii")


def seal_seed(
    magic: str,
    seed: bytes,
    passphrase: str,
    *,
    kdf: KdfParams = DEFAULT_KDF,
    salt: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """The file content for ``seed`` sealed under ``passphrase`` (salt and nonce: random)."""
    if magic not in (LOCKED_MAGIC, BACKUP_MAGIC):
        raise ValueError(f"unknown sealed-key format {magic!r}")
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    if not passphrase:
        raise ValueError("an empty passphrase protects nothing")
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    nonce = os.urandom(Aead.NONCE_SIZE) if nonce is None else nonce
    if len(salt) != _SALT_BYTES or len(nonce) != Aead.NONCE_SIZE:
        raise ValueError("the salt is 16 bytes and the nonce 24")
    header = _header(magic, bytes(SigningKey(seed).verify_key), kdf, salt)
    box = Aead(_key(passphrase, salt, kdf)).encrypt(seed, header, nonce)
    return header + f"sealed {_b64(bytes(box))}\n".encode("ascii")


@dataclass(frozen=True)
class _Parsed:
    header: bytes
    public_key: bytes
    kdf: KdfParams
    salt: bytes
    sealed: bytes


_INT = r"(0|[1-9][0-9]{0,12})"
_B64 = r"([A-Za-z0-9+/]+={0,2})"
_FORMAT = re.compile(
    (
        rf"(?P<magic>voice-identity-(?:locked|backup)-v1)\n"
        rf"public {_B64}\n"
        rf"{_KDF_NAME} {_INT} {_INT} {_B64}\n"
        rf"sealed {_B64}\n"
    ).encode("ascii")
)


def _canonical_b64(text: bytes, size: int) -> bytes:
    value = base64.b64decode(text, validate=True)
    if len(value) != size or base64.b64encode(value) != text:
        raise ValueError("not canonical base64 of the right size")
    return value


def _parse(data: bytes, magic: str) -> _Parsed:
    """The parts of a sealed file; ValueError for anything that is not exactly the format."""
    if len(data) > MAX_SEALED_SIZE:
        raise ValueError("too large")
    match = _FORMAT.fullmatch(data)
    if match is None or match.group("magic") != magic.encode("ascii"):
        raise ValueError("not the format")
    public, ops, mem, salt, sealed = match.groups()[1:]
    try:
        return _Parsed(
            header=data[: data.index(b"\nsealed ") + 1],
            public_key=_canonical_b64(public, 32),
            kdf=KdfParams(int(ops), int(mem)),
            salt=_canonical_b64(salt, _SALT_BYTES),
            sealed=_canonical_b64(sealed, _SEALED_BYTES),
        )
    except binascii.Error as exc:
        raise ValueError("bad base64") from exc


def sealed_public_key(data: bytes, *, magic: str) -> bytes:
    """Line 2, unauthenticated (to show whose key it is); ValueError if not the format."""
    return _parse(data, magic).public_key


def open_seed(data: bytes, passphrase: str, *, magic: str, source: str) -> bytes:
    """The seed sealed in ``data``; WrongPassphrase (naming ``source``) for every failure."""
    failure = WrongPassphrase(
        f"cannot open {source}: wrong passphrase, or the file was changed or damaged"
    )
    try:
        parsed = _parse(data, magic)
    except ValueError:
        raise failure from None
    if not passphrase:
        raise failure
    key = _key(passphrase, parsed.salt, parsed.kdf)
    nonce, box = parsed.sealed[: Aead.NONCE_SIZE], parsed.sealed[Aead.NONCE_SIZE :]
    try:
        seed = Aead(key).decrypt(box, parsed.header, nonce)
    except NaclCryptoError:
        raise failure from None
    if len(seed) != 32 or bytes(SigningKey(seed).verify_key) != parsed.public_key:
        raise failure  # pragma: no cover - only a writer with the passphrase could cause it
    return seed
