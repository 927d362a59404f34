"""The user's long-term Ed25519 identity key, its key file, and its fingerprints.

Key file (``$XDG_CONFIG_HOME/voice/identity.key``, mode 0600), ASCII, in one of two forms::

    voice-identity-v1
    <base64 of the 32-byte Ed25519 seed>

or, protected by a passphrase, the seed sealed as :mod:`voice.crypto.keyseal` describes, whose
first line is ``voice-identity-locked-v1``. The form is recognised on load; a protected key asks
its ``passphrase`` source (a callable, so that a prompt happens only when needed).

The file is written through :mod:`voice.crypto.privatefile`: created with ``os.open(..., 0o600)``
(never chmod after writing) in a 0700 directory, under a random temporary name, and hard-linked
(or, when it replaces a key, renamed) into place, so nobody ever sees a half-written key. A key
file that group or others can access, that belongs to another user or sits in a folder others
can write to, is refused with :class:`~voice.errors.InsecureKeyFile`.

Fingerprints (what users compare out of band) are both built from ``SHA-256(public_key)``:

* machine: ``"ed25519:" + hex(digest)`` (71 characters);
* human: ``base32(digest)`` (RFC 4648, no padding, 52 characters) in 13 groups of 4, e.g.
  ``"MFRG GZDF ..."``. The base32 alphabet has no 0/1/8/9, so it reads aloud without ambiguity.

Both carry the full digest, so :meth:`Fingerprint.parse` turns either form back into the same
:class:`Fingerprint`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.public import PrivateKey as X25519PrivateKey
from nacl.signing import SigningKey, VerifyKey

from voice.crypto._bytes import sha256
from voice.crypto.keyseal import DEFAULT_KDF, LOCKED_MAGIC, KdfParams, open_seed, seal_seed
from voice.crypto.keyseal import sealed_public_key as _sealed_public_key
from voice.crypto.privatefile import (
    check_private_dir,
    check_secret_file_mode,
    create_private_file,
    ensure_private_dir,
    read_secret_file,
    replace_private_file,
    write_new_file,
)
from voice.errors import BadPublicKey, InsecureKeyFile, WrongPassphrase

__all__ = [
    "KEY_FILE_HEADER",
    "LOCKED_KEY_FILE_HEADER",
    "Fingerprint",
    "Identity",
    "KeyFileInfo",
    "PassphraseSource",
    "check_private_dir",
    "check_secret_file_mode",
    "create_private_file",
    "default_config_dir",
    "default_identity_path",
    "ensure_private_dir",
    "fingerprint_of",
    "key_file_info",
    "read_secret_file",
    "replace_private_file",
    "verify_signature",
    "write_new_file",
    "x25519_public_of",
]

KEY_FILE_HEADER = "voice-identity-v1"
LOCKED_KEY_FILE_HEADER = LOCKED_MAGIC  # "voice-identity-locked-v1"
PassphraseSource = Callable[[], str]
_MACHINE_PREFIX = "ed25519:"
_GROUP = 4


def default_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/voice`` (``~/.config/voice`` when the variable is unset or relative)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "voice"


def default_identity_path() -> Path:
    return default_config_dir() / "identity.key"


@dataclass(frozen=True)
class Fingerprint:
    """The fingerprint of an Ed25519 public key, in a human and a machine form."""

    digest: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.digest) != 32:
            raise ValueError("a fingerprint digest is 32 bytes")

    @property
    def machine(self) -> str:
        return _MACHINE_PREFIX + self.digest.hex()

    @property
    def human(self) -> str:
        text = base64.b32encode(self.digest).decode("ascii").rstrip("=")
        return " ".join(text[i : i + _GROUP] for i in range(0, len(text), _GROUP))

    def __str__(self) -> str:
        return self.human

    def __repr__(self) -> str:
        return f"Fingerprint({self.machine!r})"

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        """Read either form (case, spaces and dashes in the human form do not matter).

        Raises ``ValueError`` if ``text`` is neither form.
        """
        s = text.strip()
        if s.lower().startswith(_MACHINE_PREFIX):
            hexpart = s[len(_MACHINE_PREFIX) :]
            if not re.fullmatch(r"[0-9a-fA-F]{64}", hexpart):
                raise ValueError("a machine fingerprint is 'ed25519:' and 64 hex digits")
            return cls(bytes.fromhex(hexpart))
        compact = re.sub(r"[\s\-]", "", s).upper()
        if not re.fullmatch(r"[A-Z2-7]{52}", compact):
            raise ValueError("a fingerprint is 52 base32 letters (A-Z, 2-7) or 'ed25519:<hex>'")
        try:
            digest = base64.b32decode(compact + "====")
        except binascii.Error as exc:  # pragma: no cover - the regex already rules this out
            raise ValueError("not base32") from exc
        fp = cls(digest)
        if fp.human.replace(" ", "") != compact:  # non-canonical trailing bits
            raise ValueError("not a canonical fingerprint")
        return fp

    def matches(self, text: str) -> bool:
        """True if ``text`` (either form) names this fingerprint; False if different or invalid."""
        try:
            other = Fingerprint.parse(text)
        except ValueError:
            return False
        return other.digest == self.digest


def fingerprint_of(public_key: bytes) -> Fingerprint:
    if len(public_key) != 32:
        raise BadPublicKey("an Ed25519 public key is 32 bytes")
    return Fingerprint(sha256(public_key))


def x25519_public_of(ed25519_public_key: bytes) -> bytes:
    """The X25519 key birationally equivalent to an Ed25519 identity key (libsodium)."""
    if len(ed25519_public_key) != 32:
        raise BadPublicKey("an Ed25519 public key is 32 bytes")
    try:
        return crypto_sign_ed25519_pk_to_curve25519(ed25519_public_key)
    except NaclCryptoError as exc:
        raise BadPublicKey("not a valid Ed25519 public key") from exc


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature made by :meth:`Identity.sign`."""
    try:
        VerifyKey(public_key).verify(message, signature)
    except (NaclCryptoError, ValueError, TypeError):
        return False
    return True


class Identity:
    """A user's Ed25519 signing key; also the X25519 key used to open envelopes."""

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing_key = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)
        self.fingerprint: Fingerprint = fingerprint_of(self.public_key)

    def __repr__(self) -> str:
        return f"Identity({self.fingerprint.machine!r})"

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(SigningKey(seed))

    @classmethod
    def load_or_create(
        cls, path: Path | None = None, *, passphrase: PassphraseSource | None = None
    ) -> Identity:
        """Load the key file, creating it (0600, in a 0700 directory, no passphrase) on first
        use. ``passphrase`` is called only if the file is protected by one."""
        path = default_identity_path() if path is None else Path(path)
        try:
            return cls.load(path, passphrase=passphrase)
        except FileNotFoundError:
            pass
        ensure_private_dir(path.parent)
        identity = cls.generate()
        try:
            create_private_file(path, identity.key_file_bytes())
        except FileExistsError:  # another process won the race: use its key
            return cls.load(path, passphrase=passphrase)
        return identity

    @classmethod
    def load(cls, path: Path, *, passphrase: PassphraseSource | None = None) -> Identity:
        """Read an existing key file (FileNotFoundError if there is none).

        A protected one calls ``passphrase()`` and raises WrongPassphrase if that does not open
        it (or if ``passphrase`` is None).
        """
        data = read_secret_file(path)
        if data.startswith(LOCKED_KEY_FILE_HEADER.encode("ascii") + b"\n"):
            if passphrase is None:
                raise WrongPassphrase(f"{path} is protected by a passphrase, and none was given")
            return cls.from_seed(
                open_seed(data, passphrase(), magic=LOCKED_KEY_FILE_HEADER, source=str(path))
            )
        return cls.from_seed(_plain_seed(path, data))

    def key_file_bytes(
        self, *, passphrase: str | None = None, kdf: KdfParams = DEFAULT_KDF
    ) -> bytes:
        """The key file's content: plain, or sealed under ``passphrase``."""
        if passphrase is not None:
            return self.sealed(LOCKED_KEY_FILE_HEADER, passphrase, kdf=kdf)
        seed = base64.b64encode(bytes(self._signing_key)).decode("ascii")
        return f"{KEY_FILE_HEADER}\n{seed}\n".encode("ascii")

    def sealed(self, magic: str, passphrase: str, *, kdf: KdfParams = DEFAULT_KDF) -> bytes:
        """The seed sealed under ``passphrase`` (voice.crypto.keyseal): key file or backup."""
        return seal_seed(magic, bytes(self._signing_key), passphrase, kdf=kdf)

    @classmethod
    def unseal(cls, data: bytes, passphrase: str, *, magic: str, source: str) -> Identity:
        """The identity sealed in ``data``; WrongPassphrase for every way that can fail."""
        return cls.from_seed(open_seed(data, passphrase, magic=magic, source=source))

    def save(
        self, path: Path, *, passphrase: str | None = None, kdf: KdfParams = DEFAULT_KDF
    ) -> None:
        """Write the key to a new file (0600); refuses to overwrite an existing one."""
        ensure_private_dir(path.parent)
        create_private_file(path, self.key_file_bytes(passphrase=passphrase, kdf=kdf))

    def replace_key_file(
        self, path: Path, *, passphrase: str | None = None, kdf: KdfParams = DEFAULT_KDF
    ) -> None:
        """Write the key over ``path`` atomically (a crash leaves the old key or this one)."""
        replace_private_file(path, self.key_file_bytes(passphrase=passphrase, kdf=kdf))

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature (used for the signaling login)."""
        return self._signing_key.sign(message).signature

    def x25519_private_key(self) -> X25519PrivateKey:
        """The X25519 private key derived from the Ed25519 seed (opens envelopes)."""
        return self._signing_key.to_curve25519_private_key()

    @property
    def x25519_public_key(self) -> bytes:
        return x25519_public_of(self.public_key)


@dataclass(frozen=True)
class KeyFileInfo:
    """What a key file shows without its passphrase."""

    public_key: bytes = field(repr=False)
    protected: bool

    @property
    def fingerprint(self) -> Fingerprint:
        return fingerprint_of(self.public_key)


def key_file_info(path: Path) -> KeyFileInfo:
    """The public key of the key file at ``path`` and whether a passphrase protects it.

    For a protected file the public key is read from its (unauthenticated) second line: good
    for showing whose key it is, not for trusting it. FileNotFoundError if there is none.
    """
    data = read_secret_file(path)
    if data.startswith(LOCKED_KEY_FILE_HEADER.encode("ascii") + b"\n"):
        try:
            return KeyFileInfo(_sealed_public_key(data, magic=LOCKED_KEY_FILE_HEADER), True)
        except ValueError:
            raise InsecureKeyFile(f"{path} is not a voice identity key file") from None
    return KeyFileInfo(Identity.from_seed(_plain_seed(path, data)).public_key, False)


def _plain_seed(path: Path, data: bytes) -> bytes:
    lines = data.decode("ascii", errors="replace").split()
    if len(lines) != 2 or lines[0] != KEY_FILE_HEADER:
        raise InsecureKeyFile(f"{path} is not a voice identity key file")
    try:
        seed = base64.b64decode(lines[1], validate=True)
    except binascii.Error as exc:
        raise InsecureKeyFile(f"{path} is not a voice identity key file") from exc
    if len(seed) != 32:
        raise InsecureKeyFile(f"{path} is not a voice identity key file")
    return seed
