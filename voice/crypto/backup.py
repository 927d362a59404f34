"""Encrypted backups of the identity key (``voice id --export FILE`` / ``--import FILE``).

A backup is the seed sealed under a passphrase in the :mod:`voice.crypto.keyseal` format, first
line ``voice-identity-backup-v1`` (Argon2id at libsodium's MODERATE cost, XChaCha20-Poly1305
over the whole file). It holds the identity key only: contacts, the remembered username and the
server pins are not in it.

Restoring is two steps, so that nothing changes until both succeeded:

1. :func:`read_backup` opens the backup; a wrong passphrase, and any changed, missing or added
   byte, give one :class:`~voice.errors.WrongPassphrase`;
2. :func:`install_identity` puts the identity in place of the key file: created if there is
   none (a temporary file linked into place); left alone if it already holds this identity;
   refused with :class:`~voice.errors.IdentityExists` if it holds another, unless ``force``,
   and then replaced atomically (a temporary file renamed over it). Never a half-written key.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
from pathlib import Path

from voice.crypto.identity import Identity, PassphraseSource, key_file_info
from voice.crypto.keyseal import BACKUP_MAGIC, DEFAULT_KDF, MAX_SEALED_SIZE, KdfParams
from voice.crypto.privatefile import write_new_file
from voice.errors import IdentityExists, WrongPassphrase

__all__ = ["BACKUP_MAGIC", "Installed", "install_identity", "read_backup", "write_backup"]


def write_backup(
    identity: Identity, path: Path, passphrase: str, *, kdf: KdfParams = DEFAULT_KDF
) -> None:
    """Write a backup of ``identity`` to a new file ``path``, then read it back and open it.

    The file is created 0600 with O_EXCL|O_NOFOLLOW (FileExistsError if the name is taken: a
    backup never overwrites anything) and fsync'ed. It is written in place, not linked, so that
    it works on file systems without hard links (a FAT USB stick). A failed write, or a backup
    that does not read back and open, is removed.
    """
    data = identity.sealed(BACKUP_MAGIC, passphrase, kdf=kdf)
    write_new_file(path, data, remove_on_error=True)
    try:
        ok = read_backup(path, passphrase).public_key == identity.public_key
    except (OSError, WrongPassphrase):
        ok = False
    if not ok:  # pragma: no cover - a failing disk
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise OSError(f"the backup written to {path} did not read back: it was removed")


def read_backup(path: Path, passphrase: str) -> Identity:
    """The identity in the backup ``path``; WrongPassphrase if it does not open.

    The file may sit anywhere (a USB stick, a download) and belong to anyone: what it holds is
    authenticated by the passphrase, so only its size and type are checked before reading.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WrongPassphrase(f"{path} is not a file")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SEALED_SIZE and (chunk := os.read(fd, MAX_SEALED_SIZE + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)  # more than MAX_SEALED_SIZE fails to open, as any change does
    finally:
        os.close(fd)
    return Identity.unseal(data, passphrase, magic=BACKUP_MAGIC, source=str(path))


class Installed(enum.Enum):
    """What :func:`install_identity` did."""

    CREATED = "created"  # there was no key file
    UNCHANGED = "unchanged"  # the key file already holds this identity
    REPLACED = "replaced"  # another identity was replaced (force)


def install_identity(
    identity: Identity,
    key_path: Path,
    *,
    force: bool = False,
    passphrase: PassphraseSource | None = None,
    kdf: KdfParams = DEFAULT_KDF,
) -> Installed:
    """Make ``identity`` the one in ``key_path``, sealed under ``passphrase()`` if a source is
    given (called only when a key file is about to be written).

    An existing key file with the same public key is left as it is (UNCHANGED, and
    ``passphrase`` is not called). Another identity raises IdentityExists unless ``force``. The
    existing file is read without its passphrase.
    """
    try:
        current = key_file_info(key_path)
    except FileNotFoundError:
        identity.save(key_path, passphrase=passphrase() if passphrase else None, kdf=kdf)
        return Installed.CREATED
    if current.public_key == identity.public_key:
        return Installed.UNCHANGED
    if not force:
        raise IdentityExists(
            f"{key_path} holds another identity ({current.fingerprint.human}). Importing would "
            f"replace it, and lose it and its usernames unless it was backed up. Back it up "
            "first (voice id --export FILE), then import again with --force."
        )
    new = passphrase() if passphrase else None
    identity.replace_key_file(key_path, passphrase=new, kdf=kdf)
    return Installed.REPLACED
