"""Identity key file (0600, refusal of readable files) and fingerprints."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.crypto.identity import (
    Fingerprint,
    Identity,
    default_identity_path,
    fingerprint_of,
    verify_signature,
)
from voice.errors import BadPublicKey, InsecureKeyFile


@pytest.fixture
def permissive_umask() -> object:
    old = os.umask(0)  # prove the 0600 comes from os.open, not from the umask
    yield
    os.umask(old)


def test_key_file_created_0600_and_reloaded(tmp_path: Path, permissive_umask: object) -> None:
    path = tmp_path / "cfg" / "voice" / "identity.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = Identity.load_or_create(path)
    assert again.public_key == first.public_key
    assert [p.name for p in path.parent.iterdir()] == ["identity.key"]  # no temp file left


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o620])
def test_readable_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    Identity.load_or_create(path)
    os.chmod(path, mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        Identity.load_or_create(path)


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    Identity.load_or_create(real)
    link = tmp_path / "identity.key"
    link.symlink_to(real)
    with pytest.raises(InsecureKeyFile, match="symbolic link"):
        Identity.load_or_create(link)


def test_garbage_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key\n")
    os.close(fd)
    with pytest.raises(InsecureKeyFile, match="not a voice identity key file"):
        Identity.load_or_create(path)


def test_default_path_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_identity_path() == tmp_path / "voice" / "identity.key"
    ident = Identity.load_or_create()
    assert (tmp_path / "voice" / "identity.key").exists()
    assert Identity.load_or_create().public_key == ident.public_key
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_identity_path() == tmp_path / "home" / ".config" / "voice" / "identity.key"


def test_concurrent_first_runs_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    keys: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: keys.append(Identity.load_or_create(path).public_key))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys) == 8


def test_sign_verifies() -> None:
    ident = Identity.from_seed(bytes(range(32)))
    sig = ident.sign(b"challenge")
    assert len(sig) == 64
    assert verify_signature(ident.public_key, b"challenge", sig)
    assert not verify_signature(ident.public_key, b"challengE", sig)


@given(st.binary(min_size=32, max_size=32))
def test_fingerprint_forms_parse_back(key: bytes) -> None:
    fp = fingerprint_of(key)
    assert Fingerprint.parse(fp.human) == fp
    assert Fingerprint.parse(fp.machine) == fp
    assert Fingerprint.parse(fp.human.lower().replace(" ", "-")) == fp
    assert Fingerprint.parse(fp.machine.upper()) == fp
    assert fp.matches(fp.human) and fp.matches(fp.machine)


def test_fingerprint_shapes() -> None:
    fp = Identity.from_seed(bytes(32)).fingerprint
    groups = fp.human.split(" ")
    assert len(groups) == 13 and all(len(g) == 4 for g in groups)
    assert set(fp.human.replace(" ", "")) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert fp.machine.startswith("ed25519:") and len(fp.machine) == 8 + 64


@pytest.mark.parametrize(
    "text", ["", "ed25519:zz", "ed25519:" + "0" * 63, "ABCD", "A" * 51 + "1", "0" * 52]
)
def test_bad_fingerprint_text(text: str) -> None:
    with pytest.raises(ValueError):
        Fingerprint.parse(text)
    assert not fingerprint_of(bytes(32)).matches(text)


def test_non_canonical_base32_is_refused() -> None:
    fp = fingerprint_of(bytes(32))
    compact = fp.human.replace(" ", "")
    # 256 bits in 52 base32 letters leave 4 unused bits in the last one (always A or Q).
    assert compact[-1] in "AQ"
    tweaked = compact[:-1] + chr(ord(compact[-1]) + 1)
    with pytest.raises(ValueError):
        Fingerprint.parse(tweaked)


def test_different_keys_do_not_match() -> None:
    a, b = fingerprint_of(bytes(32)), fingerprint_of(b"\x01" + bytes(31))
    assert not a.matches(b.human) and not a.matches(b.machine)


def test_fingerprint_of_wrong_length() -> None:
    with pytest.raises(BadPublicKey):
        fingerprint_of(b"short")
