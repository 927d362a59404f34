"""Protected key files (voice.crypto.identity) and backups (voice.crypto.backup)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from voice.crypto.backup import Installed, install_identity, read_backup, write_backup
from voice.crypto.identity import Identity, key_file_info
from voice.crypto.keyseal import FAST_KDF_FOR_TESTS as FAST
from voice.errors import IdentityExists, InsecureKeyFile, WrongPassphrase

PASS = "a passphrase for tests"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_protected_key_file_loads_with_its_passphrase_only(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "identity.key"
    me = Identity.generate()
    me.save(path, passphrase=PASS, kdf=FAST)
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    asked: list[int] = []

    def source() -> str:
        asked.append(1)
        return PASS

    assert Identity.load_or_create(path, passphrase=source).public_key == me.public_key
    assert asked == [1]
    with pytest.raises(WrongPassphrase, match="none was given"):
        Identity.load_or_create(path)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Identity.load(path, passphrase=lambda: "not it at all")
    info = key_file_info(path)
    assert info.protected and info.public_key == me.public_key


def test_a_plain_key_file_never_asks(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    me = Identity.load_or_create(path)

    def source() -> str:
        raise AssertionError("asked for a passphrase that is not needed")

    assert Identity.load_or_create(path, passphrase=source).public_key == me.public_key
    assert not key_file_info(path).protected


def test_replace_key_file_adds_and_removes_the_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    me = Identity.load_or_create(path)
    me.replace_key_file(path, passphrase=PASS, kdf=FAST)
    assert key_file_info(path).protected and _mode(path) == 0o600
    me.replace_key_file(path)
    assert not key_file_info(path).protected
    assert Identity.load(path).public_key == me.public_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]  # no temp files


def test_backup_round_trip(tmp_path: Path) -> None:
    me = Identity.generate()
    backup = tmp_path / "me.backup"
    write_backup(me, backup, PASS, kdf=FAST)
    assert _mode(backup) == 0o600
    assert read_backup(backup, PASS).public_key == me.public_key
    with pytest.raises(WrongPassphrase):
        read_backup(backup, PASS + "!")


def test_a_backup_never_overwrites_a_file_or_follows_a_link(tmp_path: Path) -> None:
    me = Identity.generate()
    existing = tmp_path / "taken"
    existing.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        write_backup(me, existing, PASS, kdf=FAST)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        write_backup(me, link, PASS, kdf=FAST)
    assert existing.read_bytes() == b"precious" and not (tmp_path / "elsewhere").exists()


def test_a_backup_may_belong_to_anyone_but_must_be_a_small_file(tmp_path: Path) -> None:
    me = Identity.generate()
    backup = tmp_path / "me.backup"
    write_backup(me, backup, PASS, kdf=FAST)
    os.chmod(backup, 0o644)  # copied from a USB stick: fine, the passphrase protects it
    assert read_backup(backup, PASS).public_key == me.public_key
    with pytest.raises(WrongPassphrase):
        read_backup(tmp_path, PASS)  # a directory
    big = tmp_path / "big"
    big.write_bytes(backup.read_bytes() + b"x" * 5000)
    with pytest.raises(WrongPassphrase):
        read_backup(big, PASS)


def test_install_creates_keeps_refuses_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "identity.key"
    me, other = Identity.generate(), Identity.generate()
    assert install_identity(me, path) is Installed.CREATED
    assert Identity.load(path).public_key == me.public_key and _mode(path) == 0o600
    assert install_identity(me, path) is Installed.UNCHANGED
    before = path.read_bytes()
    with pytest.raises(IdentityExists, match="--force"):
        install_identity(other, path)
    assert path.read_bytes() == before
    asked: list[int] = []

    def source() -> str:
        asked.append(1)
        return PASS

    result = install_identity(other, path, force=True, passphrase=source, kdf=FAST)
    assert result is Installed.REPLACED and asked == [1]
    assert Identity.load(path, passphrase=lambda: PASS).public_key == other.public_key
    # the same identity, protected: compared without its passphrase, never asked
    assert install_identity(other, path, passphrase=source) is Installed.UNCHANGED
    assert asked == [1]


def test_install_does_not_overwrite_an_insecure_or_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(b"garbage")
    path.chmod(0o600)
    with pytest.raises(InsecureKeyFile, match="not a voice identity key file"):
        install_identity(Identity.generate(), path, force=True)
    assert path.read_bytes() == b"garbage"
