"""The user's long-term Ed25519 identity key, its key file, and its fingerprints.

Key file (``$XDG_CONFIG_HOME/voice/identity.key``, mode 0600), ASCII::

    voice-identity-v1
    <base64 of the 32-byte Ed25519 seed>

The file is created with ``os.open(..., 0o600)`` (never chmod after writing) in a 0700 directory,
written to a temporary name and hard-linked into place so a concurrent first run never sees a
half-written key. A key file that group or others can access, or that belongs to another user,
is refused with :class:`~voice.errors.InsecureKeyFile`.

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
import contextlib
import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.public import PrivateKey as X25519PrivateKey
from nacl.signing import SigningKey, VerifyKey

from voice.crypto._bytes import sha256
from voice.errors import BadPublicKey, InsecureKeyFile

__all__ = [
    "KEY_FILE_HEADER",
    "Fingerprint",
    "Identity",
    "default_config_dir",
    "default_identity_path",
    "fingerprint_of",
    "verify_signature",
    "x25519_public_of",
]

KEY_FILE_HEADER = "voice-identity-v1"
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
    def load_or_create(cls, path: Path | None = None) -> Identity:
        """Load the key file, creating it (0600, in a 0700 directory) on first use."""
        path = default_identity_path() if path is None else Path(path)
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        identity = cls.generate()
        try:
            _create_exclusive(path, identity._key_file_text())
        except FileExistsError:  # another process won the race: use its key
            return cls._load(path)
        return identity

    @classmethod
    def _load(cls, path: Path) -> Identity:
        text = read_secret_file(path).decode("ascii", errors="replace")
        lines = text.split()
        if len(lines) != 2 or lines[0] != KEY_FILE_HEADER:
            raise InsecureKeyFile(f"{path} is not a voice identity key file")
        try:
            seed = base64.b64decode(lines[1], validate=True)
        except binascii.Error as exc:
            raise InsecureKeyFile(f"{path} is not a voice identity key file") from exc
        if len(seed) != 32:
            raise InsecureKeyFile(f"{path} is not a voice identity key file")
        return cls.from_seed(seed)

    def _key_file_text(self) -> bytes:
        seed = base64.b64encode(bytes(self._signing_key)).decode("ascii")
        return f"{KEY_FILE_HEADER}\n{seed}\n".encode("ascii")

    def save(self, path: Path) -> None:
        """Write the key to a new file (0600); refuses to overwrite an existing one."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_exclusive(path, self._key_file_text())

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature (used for the signaling login)."""
        return self._signing_key.sign(message).signature

    def x25519_private_key(self) -> X25519PrivateKey:
        """The X25519 private key derived from the Ed25519 seed (opens envelopes)."""
        return self._signing_key.to_curve25519_private_key()

    @property
    def x25519_public_key(self) -> bytes:
        return x25519_public_of(self.public_key)


def check_secret_file_mode(path: Path, st: os.stat_result) -> None:
    """Refuse a secret file that group/others can access, that is not ours, or not a file."""
    if not stat.S_ISREG(st.st_mode):
        raise InsecureKeyFile(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise InsecureKeyFile(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can access it. "
            f"Run 'chmod 600 {path}' if you are sure nobody copied it."
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise InsecureKeyFile(f"{path} belongs to another user")


def read_secret_file(path: Path) -> bytes:
    """Read a secret file after checking (on the open descriptor) that only we can access it."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InsecureKeyFile(f"{path} is a symbolic link") from exc
        raise
    try:
        check_secret_file_mode(path, os.fstat(fd))
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _create_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``; FileExistsError if it already exists."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    write_new_file(tmp, data)
    try:
        os.link(tmp, path)  # atomic, and fails if path exists
    finally:
        os.unlink(tmp)


def replace_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: a new 0600 file, fsync'ed, renamed over it,
    the directory fsync'ed, so a crash leaves the old or the new content, never a torn file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        write_new_file(tmp, data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file (O_EXCL), fsync'ed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
