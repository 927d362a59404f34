"""Pinned contacts: trust on first use, a changed key is refused until trust() while the pinned
key keeps working, retained secrets, several processes and servers sharing one book."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from voice.crypto.contacts import ContactBook, KeySource, TrustState
from voice.crypto.continuity import RetainedSecrets
from voice.crypto.identity import Identity
from voice.errors import (
    BadPublicKey,
    InsecureKeyFile,
    KeyChangedError,
    UnknownContact,
    UnknownFingerprint,
)

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
        book.check("bob", NEW.public_key, source=KeySource.OFFER)
    assert info.value.user == "bob"
    assert info.value.old_fingerprint == OLD.fingerprint.human
    assert info.value.new_fingerprint == NEW.fingerprint.human
    assert "only the signaling server vouches" in str(info.value).lower()
    c = book.get("bob")
    assert c is not None and c.state is TrustState.CHANGED and c.pending_key == NEW.public_key
    assert c.pending_source is KeySource.OFFER  # where the new key came from is recorded
    # the new key keeps being refused, also after a reload
    with pytest.raises(KeyChangedError):
        book.check("bob", NEW.public_key)
    with pytest.raises(KeyChangedError):
        ContactBook(book.path).check("bob", NEW.public_key)
    # ... while the pinned key keeps working: one lie cannot lock the real contact out
    assert book.check("bob", OLD.public_key).public_key == OLD.public_key

    with pytest.raises(UnknownFingerprint):
        book.trust("bob", OTHER.fingerprint.human)
    c = book.trust("bob", NEW.fingerprint.machine)
    assert c.state is TrustState.VERIFIED and c.public_key == NEW.public_key
    assert c.introduced is KeySource.TRUST
    assert book.check("bob", NEW.public_key).state is TrustState.VERIFIED
    with pytest.raises(KeyChangedError):
        book.check("bob", OLD.public_key)  # the old key is now the changed one


def test_a_call_under_the_pinned_key_or_a_verified_sas_drops_the_pending_key(
    book: ContactBook,
) -> None:
    book.check("bob", OLD.public_key)
    with pytest.raises(KeyChangedError):
        book.check("bob", NEW.public_key)
    book.note_connected("bob", NEW.public_key)  # not the pinned key: changes nothing
    assert book.get("bob").state is TrustState.CHANGED  # type: ignore[union-attr]
    book.note_connected("bob", OLD.public_key)
    c = book.get("bob")
    assert c is not None and c.state is TrustState.UNVERIFIED and c.connected_calls == 1
    with pytest.raises(KeyChangedError):
        book.check("bob", NEW.public_key)
    assert book.mark_verified("bob").state is TrustState.VERIFIED


def test_contacts_pinned_by_an_incoming_call_stay_unsolicited_until_verified(
    book: ContactBook,
) -> None:
    assert book.check("mallory", OTHER.public_key, source=KeySource.OFFER).solicited is False
    assert book.check("bob", OLD.public_key, source=KeySource.LOOKUP).solicited is True
    book.note_connected("mallory", OTHER.public_key)  # an auto-answered call buys no room
    assert book.get("mallory").solicited is False  # type: ignore[union-attr]
    book.mark_verified("mallory")
    assert book.get("mallory").solicited is True  # type: ignore[union-attr]


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
    # the retained secret belongs to the pinned key, which still works
    assert book.get_retained("bob") == RetainedSecrets(b"1" * 32)
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
    assert doc["version"] == 2 and doc["servers"][""]["bob"]["key"] == OLD.public_key.hex()
    names = sorted(p.name for p in book.path.parent.iterdir())
    assert names == ["contacts.json", "contacts.json.lock"]  # no temporary file left behind


def test_readable_or_corrupt_book_is_refused(book: ContactBook) -> None:
    book.check("bob", OLD.public_key)
    os.chmod(book.path, 0o644)
    with pytest.raises(InsecureKeyFile):
        ContactBook(book.path)
    os.chmod(book.path, 0o600)
    book.path.write_text("{not json")
    with pytest.raises(InsecureKeyFile):
        ContactBook(book.path)


def test_two_processes_sharing_the_book_keep_each_others_changes(tmp_path: Path) -> None:
    """``voice listen`` and ``voice call`` at once: each change re-reads the file under a lock."""
    listen, call = ContactBook(tmp_path / "c.json"), ContactBook(tmp_path / "c.json")
    listen.check("bob", OLD.public_key)
    call.check("carol", OTHER.public_key)  # loaded before bob was pinned by the other one
    listen.store_retained("bob", b"1" * 32)
    call.mark_verified("carol")
    fresh = ContactBook(tmp_path / "c.json")
    assert {c.user for c in fresh.all()} == {"bob", "carol"}
    assert fresh.get_retained("bob") == RetainedSecrets(b"1" * 32)
    assert call.get("bob") is not None  # a read sees the other process's change
    # Control: without re-reading before a write, the second writer loses the first's change.
    stale = ContactBook(tmp_path / "c.json")
    listen.check("dave", NEW.public_key)
    stale._seen = stale._seen or (0, 0, 0)  # pretend the file did not change
    stale._books[""]["erin"] = stale._books[""]["bob"]
    stale._save()
    assert ContactBook(tmp_path / "c.json").get("dave") is None


def test_contacts_are_kept_per_server(tmp_path: Path) -> None:
    one = ContactBook(tmp_path / "c.json", server="wss://one.example")
    two = ContactBook(tmp_path / "c.json", server="wss://two.example")
    one.check("bob", OLD.public_key)
    assert two.check("bob", NEW.public_key).public_key == NEW.public_key  # another bob: no alarm
    assert one.check("bob", OLD.public_key).public_key == OLD.public_key


def test_a_version_1_book_is_adopted_by_the_first_server(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    v1 = {"version": 1, "contacts": {"bob": {"key": OLD.public_key.hex(), "state": "verified",
          "pending_key": None, "retained": {"current": None, "previous": None}}}}  # fmt: skip
    path.write_text(json.dumps(v1))
    os.chmod(path, 0o600)
    book = ContactBook(path, server="wss://one.example")
    c = book.get("bob")
    assert c is not None and c.state is TrustState.VERIFIED and c.solicited
    book.check("carol", OTHER.public_key)
    doc = json.loads(path.read_text())
    assert set(doc["servers"]) == {"wss://one.example"}


def test_a_secret_for_a_key_no_longer_pinned_is_not_kept(book: ContactBook) -> None:
    book.check("bob", OLD.public_key)
    book.store_retained("bob", b"1" * 32, key=NEW.public_key)  # the call ran under another key
    assert book.get_retained("bob") == RetainedSecrets()
    book.store_retained("bob", b"1" * 32, key=OLD.public_key)
    assert book.get_retained("bob") == RetainedSecrets(b"1" * 32)


def test_a_key_nobody_can_seal_to_is_neither_pinned_nor_kept(book: ContactBook) -> None:
    """A lying server's 32 bytes that are no point (or one of small order): pinned, they would
    lock the real contact out (every call under the real key a "key change")."""
    small_order = bytes(32)  # the identity point's encoding
    for junk in (small_order, b"\x02" * 32):
        with pytest.raises(BadPublicKey):
            book.check("bob", junk)
        assert book.get("bob") is None
    book.check("bob", OLD.public_key)
    with pytest.raises(BadPublicKey):
        book.check("bob", small_order)
    seen = book.get("bob")
    assert seen is not None and seen.public_key == OLD.public_key and seen.pending_key is None
