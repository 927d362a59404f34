"""Pinned contacts: trust on first use, key change blocks until trust(), retained secrets."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from voice.crypto.contacts import ContactBook, TrustState
from voice.crypto.continuity import RetainedSecrets
from voice.crypto.identity import Identity
from voice.errors import InsecureKeyFile, KeyChangedError, UnknownContact, UnknownFingerprint

OLD = Identity.from_seed(b"o" * 32)
NEW = Identity.from_seed(b"n" * 32)
OTHER = Identity.from_seed(b"x" * 32)


@pytest.fixture
def book(tmp_path: Path) -> ContactBook:
    return ContactBook(tmp_path / "contacts.json")


def test_first_use_pins_unverified(book: ContactBook) -> None:
    c = book.check("bob", OLD.public_key)
    assert c.state is TrustState.UNVERIFIED and c.public_key == OLD.public_key
    assert c.fingerprint == OLD.fingerprint
    assert book.check("bob", OLD.public_key).state is TrustState.UNVERIFIED
    assert ContactBook(book.path).get("bob") == c  # saved at once


def test_changed_key_blocks_until_trusted(book: ContactBook) -> None:
    book.check("bob", OLD.public_key)
    with pytest.raises(KeyChangedError) as info:
        book.check("bob", NEW.public_key)
    assert info.value.user == "bob"
    assert info.value.old_fingerprint == OLD.fingerprint.human
    assert info.value.new_fingerprint == NEW.fingerprint.human
    c = book.get("bob")
    assert c is not None and c.state is TrustState.CHANGED and c.pending_key == NEW.public_key
    # keeps refusing, for the new key, the old key, and after a reload
    for key in (NEW.public_key, OLD.public_key):
        with pytest.raises(KeyChangedError):
            book.check("bob", key)
    with pytest.raises(KeyChangedError):
        ContactBook(book.path).check("bob", NEW.public_key)
    with pytest.raises(KeyChangedError):
        book.mark_verified("bob")

    with pytest.raises(UnknownFingerprint):
        book.trust("bob", OTHER.fingerprint.human)
    c = book.trust("bob", NEW.fingerprint.machine)
    assert c.state is TrustState.VERIFIED and c.public_key == NEW.public_key
    assert book.check("bob", NEW.public_key).state is TrustState.VERIFIED
    with pytest.raises(KeyChangedError):
        book.check("bob", OLD.public_key)  # the old key is now the changed one


def test_trusting_old_fingerprint_restores_old_key(book: ContactBook) -> None:
    book.check("bob", OLD.public_key)
    with pytest.raises(KeyChangedError):
        book.check("bob", NEW.public_key)
    c = book.trust("bob", OLD.fingerprint.human)
    assert c.public_key == OLD.public_key and c.state is TrustState.VERIFIED
    assert book.check("bob", OLD.public_key).state is TrustState.VERIFIED


def test_latest_unknown_key_becomes_pending(book: ContactBook) -> None:
    book.check("bob", OLD.public_key)
    for key in (NEW.public_key, OTHER.public_key):
        with pytest.raises(KeyChangedError):
            book.check("bob", key)
    c = book.get("bob")
    assert c is not None and c.pending_key == OTHER.public_key
    with pytest.raises(UnknownFingerprint):
        book.trust("bob", NEW.fingerprint.human)


def test_unknown_contact(book: ContactBook) -> None:
    with pytest.raises(UnknownContact):
        book.trust("nobody", OLD.fingerprint.human)
    with pytest.raises(UnknownContact):
        book.mark_verified("nobody")
    with pytest.raises(ValueError):
        book.check("bob", OLD.public_key) and book.trust("bob", "not a fingerprint")
    assert book.get("nobody") is None


def test_mark_verified_and_all(book: ContactBook) -> None:
    book.check("carol", OTHER.public_key)
    book.check("bob", OLD.public_key)
    assert book.mark_verified("bob").state is TrustState.VERIFIED
    assert [c.user for c in book.all()] == ["bob", "carol"]
    assert ContactBook(book.path).get("bob").state is TrustState.VERIFIED  # type: ignore[union-attr]


def test_retained_secrets_rotate_and_persist(book: ContactBook) -> None:
    book.check("bob", OLD.public_key)
    assert book.get_retained("bob") == RetainedSecrets()
    s1, s2, s3 = b"1" * 32, b"2" * 32, b"3" * 32
    book.store_retained("bob", s1)
    book.store_retained("bob", s2)
    assert book.get_retained("bob") == RetainedSecrets(s2, s1)
    book.store_retained("bob", s3)
    assert ContactBook(book.path).get_retained("bob") == RetainedSecrets(s3, s2)
    assert book.get_retained("nobody") == RetainedSecrets()


def test_new_key_drops_retained_secrets(book: ContactBook) -> None:
    book.check("bob", OLD.public_key)
    book.store_retained("bob", b"1" * 32)
    with pytest.raises(KeyChangedError):
        book.check("bob", NEW.public_key)
    assert book.get_retained("bob") == RetainedSecrets()  # none offered while CHANGED
    with pytest.raises(KeyChangedError):
        book.store_retained("bob", b"2" * 32)
    book.trust("bob", NEW.fingerprint.human)
    assert book.get_retained("bob") == RetainedSecrets()


def test_stored_secret_is_a_private_copy(book: ContactBook) -> None:
    from voice.crypto._bytes import wipe

    book.check("bob", OLD.public_key)
    secret = os.urandom(32)
    keep = bytes(bytearray(secret))
    book.store_retained("bob", secret)
    wipe(secret)  # what CallKeys.erase() does to next_retained
    assert book.get_retained("bob").current == keep


def test_file_is_0600_json_and_atomic(book: ContactBook) -> None:
    os.umask(0o022)
    book.check("bob", OLD.public_key)
    assert stat.S_IMODE(book.path.stat().st_mode) == 0o600
    doc = json.loads(book.path.read_text())
    assert doc["version"] == 1 and doc["contacts"]["bob"]["key"] == OLD.public_key.hex()
    assert [p.name for p in book.path.parent.iterdir()] == ["contacts.json"]


def test_readable_or_corrupt_book_is_refused(book: ContactBook) -> None:
    book.check("bob", OLD.public_key)
    os.chmod(book.path, 0o644)
    with pytest.raises(InsecureKeyFile):
        ContactBook(book.path)
    os.chmod(book.path, 0o600)
    book.path.write_text("{not json")
    with pytest.raises(InsecureKeyFile):
        ContactBook(book.path)
