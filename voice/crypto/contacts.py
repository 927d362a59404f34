"""Pinned contacts (trust on first use), with the retained secrets used for key continuity.

States of a contact:

* UNVERIFIED: its key was pinned the first time we saw it; nobody compared a SAS or fingerprint.
* VERIFIED: the user compared the SAS on a call, or accepted the fingerprint (``voice trust``).
* CHANGED: another key was presented under the contact's name. The new key is kept as
  *pending*, with where it came from (:class:`KeySource`). The pinned key keeps working
  whenever it is presented: one lying key lookup or one forged offer cannot lock the real
  contact out. The pending key is refused until the user runs :meth:`ContactBook.trust` with
  its fingerprint, checked out of band; a call that connects under the pinned key (the real
  holder is alive) drops the pending key again.

Where a key came from matters for how much room its holder gets (voice.call.inbound): a contact
that only ever called us unasked (``introduced`` OFFER, never verified, never connected) is
*unsolicited*; everyone else is *solicited*.

Contacts are kept per signaling server (``server``: the URL), so "bob" on one server is not
"bob" on another. The book is one JSON file (default ``$XDG_CONFIG_HOME/voice/contacts.json``,
next to the identity), mode 0600 because it holds retained secrets. Several processes may use
it at once (``voice listen`` and ``voice call``): every change takes an exclusive lock
(``contacts.json.lock``), re-reads the file, applies the change and writes a temporary file
that is fsync'ed and renamed over the old one; every read re-reads a file that changed. The
file format is in :mod:`voice.crypto.contactstore`. A version 1 book (one flat list of contacts)
is read as the contacts of the first server that opens it.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from voice.crypto.contactstore import LEGACY, Books, KeySource, Record, decode_book, encode_book
from voice.crypto.continuity import RetainedSecrets
from voice.crypto.identity import Fingerprint, default_config_dir, fingerprint_of, x25519_public_of
from voice.crypto.privatefile import locked, read_secret_file, replace_private_file
from voice.errors import InsecureKeyFile, KeyChangedError, UnknownContact, UnknownFingerprint

__all__ = ["Contact", "ContactBook", "KeySource", "TrustState", "default_contacts_path"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def default_contacts_path() -> Path:
    return default_config_dir() / "contacts.json"


class TrustState(enum.Enum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    CHANGED = "changed"


@dataclass(frozen=True)
class Contact:
    user: str
    public_key: bytes  # the pinned key
    state: TrustState
    fingerprint: Fingerprint
    introduced: KeySource = KeySource.LOOKUP  # where the pinned key came from
    connected_calls: int = 0  # calls that connected under the pinned key
    pending_key: bytes | None = None  # another key presented under this name (CHANGED)
    pending_fingerprint: Fingerprint | None = None
    pending_source: KeySource | None = None

    @property
    def solicited(self) -> bool:
        """Verified, dialed by us, or trusted by fingerprint: not someone who only ever called us
        (a connected call does not count: an attacker's auto-answered call would buy it room)."""
        return self.state is TrustState.VERIFIED or self.introduced is not KeySource.OFFER


def _contact(user: str, rec: Record) -> Contact:
    if rec.pending_key is not None:
        state = TrustState.CHANGED
    else:
        state = TrustState.VERIFIED if rec.verified else TrustState.UNVERIFIED
    return Contact(
        user=user,
        public_key=rec.key,
        state=state,
        fingerprint=fingerprint_of(rec.key),
        introduced=rec.introduced,
        connected_calls=rec.calls,
        pending_key=rec.pending_key,
        pending_fingerprint=(
            fingerprint_of(rec.pending_key) if rec.pending_key is not None else None
        ),
        pending_source=rec.pending_source,
    )


def _changed_error(user: str, rec: Record) -> KeyChangedError:
    assert rec.pending_key is not None and rec.pending_source is not None
    return KeyChangedError(
        user,
        fingerprint_of(rec.key).human,
        fingerprint_of(rec.pending_key).human,
        source=rec.pending_source.description,
    )


class ContactBook:
    """The pinned identity keys of the people we call on one server. Every change is saved at
    once, under a lock, on top of whatever another process saved meanwhile."""

    def __init__(self, path: Path | None = None, *, server: str = "") -> None:
        self.path = default_contacts_path() if path is None else Path(path)
        self.server = server
        self._books: Books = {}
        self._seen: tuple[int, int, int] | None = None
        self._refresh()

    # ---- reading ----------------------------------------------------------------------------

    def get(self, user: str) -> Contact | None:
        rec = self._records().get(user)
        return _contact(user, rec) if rec is not None else None

    def all(self) -> list[Contact]:
        return [_contact(user, rec) for user, rec in sorted(self._records().items())]

    def servers_with(self, user: str) -> list[str]:
        """The servers on which ``user`` is a contact (for commands given no server)."""
        self._refresh()
        return sorted(s for s, records in self._books.items() if user in records)

    def by_server(self) -> dict[str, list[Contact]]:
        """Every contact of every server in the book."""
        self._refresh()
        return {
            server: [_contact(user, rec) for user, rec in sorted(records.items())]
            for server, records in sorted(self._books.items())
            if records
        }

    def get_retained(self, user: str) -> RetainedSecrets:
        """The retained secrets for ``user`` (empty if none or unknown)."""
        rec = self._records().get(user)
        return RetainedSecrets() if rec is None else rec.retained

    # ---- changing ---------------------------------------------------------------------------

    def check(
        self, user: str, public_key: bytes, *, source: KeySource = KeySource.LOOKUP
    ) -> Contact:
        """Pin ``public_key`` on first use; return the contact if the key is the pinned one.

        Another key raises KeyChangedError and is kept as the pending key, with ``source``.
        The pinned key is accepted even while another key is pending. A key nobody can seal
        to (not a point, of small order: a lying server's answer) raises BadPublicKey and is
        neither pinned nor kept: pinned, it would lock the real contact out.
        """
        x25519_public_of(public_key)  # validates the length and the point
        rec = self._records().get(user)
        if rec is not None and rec.key == public_key:
            return _contact(user, rec)
        result = self._change(lambda records: _check(records, user, bytes(public_key), source))
        if isinstance(result, KeyChangedError):
            raise result  # after the pending key was saved
        return result

    def trust(self, user: str, fingerprint: str) -> Contact:
        """The user checked ``fingerprint`` out of band: pin that key as VERIFIED.

        Accepts the pending key (a changed contact) or the pinned key. Trusting a new key drops
        the retained secrets, which belonged to the old key.
        """
        fp = Fingerprint.parse(fingerprint)

        def apply(records: dict[str, Record]) -> Contact:
            rec = _require(records, user)
            if rec.pending_key is not None and fingerprint_of(rec.pending_key) == fp:
                rec.key, rec.pending_key, rec.pending_source = rec.pending_key, None, None
                rec.retained, rec.introduced, rec.calls = RetainedSecrets(), KeySource.TRUST, 0
            elif fingerprint_of(rec.key) == fp:
                rec.pending_key = rec.pending_source = None
            else:
                raise UnknownFingerprint(
                    f"{fingerprint!r} is not the fingerprint of any key of {user}"
                )
            rec.verified = True
            return _contact(user, rec)

        return self._change(apply)

    def mark_verified(self, user: str) -> Contact:
        """The users compared the SAS on a call under the pinned key: mark it VERIFIED (and
        drop a pending key: its holder is not the one the user just verified)."""

        def apply(records: dict[str, Record]) -> Contact:
            rec = _require(records, user)
            rec.verified = True
            rec.pending_key = rec.pending_source = None
            return _contact(user, rec)

        return self._change(apply)

    def note_connected(self, user: str, public_key: bytes) -> None:
        """A call under ``public_key`` connected. Under the pinned key this counts the call and
        drops a pending key (the pinned key's holder is alive, so the other key was a lie)."""

        def apply(records: dict[str, Record]) -> None:
            rec = records.get(user)
            if rec is None or rec.key != public_key:
                return
            rec.calls += 1
            if rec.pending_key is not None:
                log.info("a call under the pinned key connected: dropped the pending key")
                rec.pending_key = rec.pending_source = None

        self._change(apply)

    def store_retained(self, user: str, secret: bytes, *, key: bytes | None = None) -> None:
        """Keep ``secret`` (``CallKeys.next_retained``) as the current one, the old as previous.

        Call it when a call earned it (voice.call.agreement.CallAgreement.earned_retained) or
        its SAS was confirmed. With ``key`` (the identity key the call ran under), nothing is
        kept if the pinned key is no longer that one: a ``voice trust`` in another process
        between the call's check and this write must not give the new key the old one's secret.
        """
        copy = bytes(bytearray(secret))  # our own object: CallKeys.erase() wipes theirs

        def apply(records: dict[str, Record]) -> None:
            rec = _require(records, user)
            if key is not None and rec.key != key:
                return
            rec.retained = rec.retained.rotated(copy)

        self._change(apply)

    # ---- the file ---------------------------------------------------------------------------

    def _records(self) -> dict[str, Record]:
        self._refresh()
        return self._scope(self._books)

    def _scope(self, books: Books) -> dict[str, Record]:
        if self.server not in books and LEGACY in books:
            books[self.server] = books.pop(LEGACY)  # a version 1 book: adopt its contacts
        return books.setdefault(self.server, {})

    def _change(self, apply: Callable[[dict[str, Record]], T]) -> T:
        with locked(self.path):
            self._seen = None  # re-read under the lock, whatever we saw before
            self._refresh()
            result = apply(self._scope(self._books))
            self._save()
        return result

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            self._books, self._seen = {}, None
            return
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return
        raw = read_secret_file(self.path)
        try:
            self._books = decode_book(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InsecureKeyFile(f"{self.path} is not a readable contact book: {exc}") from exc
        self._seen = seen

    def _save(self) -> None:
        data = encode_book(self._books)
        replace_private_file(self.path, data)
        self._seen = None  # our own write: re-read (and note its stat) next time


def _check(
    records: dict[str, Record], user: str, key: bytes, source: KeySource
) -> Contact | KeyChangedError:
    rec = records.get(user)
    if rec is None:
        rec = records[user] = Record(key=key, verified=False, introduced=source)
        return _contact(user, rec)
    if rec.key == key:  # pinned meanwhile by another process
        return _contact(user, rec)
    if rec.pending_key != key or rec.pending_source is None:
        rec.pending_key, rec.pending_source = key, source
    return _changed_error(user, rec)


def _require(records: dict[str, Record], user: str) -> Record:
    rec = records.get(user)
    if rec is None:
        raise UnknownContact(f"no contact named {user!r}")
    return rec
