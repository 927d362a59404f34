"""Attack 4, key files: created 0600 (in a 0700 folder); any group/world access is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voice.crypto.contacts import ContactBook
from voice.crypto.identity import Identity
from voice.errors import InsecureKeyFile


def test_identity_key_file_is_created_0600_in_a_0700_folder(tmp_path: Path) -> None:
    path = tmp_path / "voice" / "identity.key"
    identity = Identity.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert Identity.load_or_create(path).public_key == identity.public_key


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640, 0o606, 0o660, 0o666, 0o601])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    Identity.load_or_create(path)
    os.chmod(path, mode)
    with pytest.raises(InsecureKeyFile):
        Identity.load_or_create(path)


def test_a_world_readable_contact_book_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "contacts.json"
    book = ContactBook(path)
    book.check("bob", Identity.generate().public_key)  # written at once
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(InsecureKeyFile):
        ContactBook(path)


def test_a_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    Identity.load_or_create(real)
    link = tmp_path / "identity.key"
    link.symlink_to(real)
    with pytest.raises(InsecureKeyFile):
        Identity.load_or_create(link)
