"""Pinned contacts (trust on first use), with the retained secrets used for key continuity.

States of a contact:

* UNVERIFIED: its key was pinned the first time we saw it; nobody compared a SAS or fingerprint.
* VERIFIED: the user compared the SAS on a call, or accepted the fingerprint (``voice trust``).
* CHANGED: the contact presented a different key. The new key is kept as *pending* and every
  :meth:`ContactBook.check` raises :class:`~voice.errors.KeyChangedError` until the user runs
  :meth:`ContactBook.trust` with the fingerprint of the key they checked out of band.

The book is one JSON file (default ``$XDG_CONFIG_HOME/voice/contacts.json``, next to the
identity), mode 0600 because it holds retained secrets. Each save writes a temporary file, fsyncs
it and renames it over the old one, so a crash never leaves a half-written book::

    {"version": 1, "contacts": {"bob": {"key": hex, "state": "unverified" | "verified",
     "pending_key": hex | null, "retained": {"current": hex | null, "previous": hex | null}}}}
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice.crypto.continuity import RetainedSecrets
from voice.crypto.identity import (
    Fingerprint,
    default_config_dir,
    fingerprint_of,
    read_secret_file,
    replace_private_file,
)
from voice.errors import InsecureKeyFile, KeyChangedError, UnknownContact, UnknownFingerprint

__all__ = ["Contact", "ContactBook", "TrustState", "default_contacts_path"]

_VERSION = 1


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
    pending_key: bytes | None = None  # the new key seen while CHANGED
    pending_fingerprint: Fingerprint | None = None


@dataclass
class _Record:
    key: bytes
    verified: bool
    pending_key: bytes | None = None
    retained: RetainedSecrets = field(default_factory=RetainedSecrets)

    def to_contact(self, user: str) -> Contact:
        if self.pending_key is not None:
            state = TrustState.CHANGED
        else:
            state = TrustState.VERIFIED if self.verified else TrustState.UNVERIFIED
        return Contact(
            user=user,
            public_key=self.key,
            state=state,
            fingerprint=fingerprint_of(self.key),
            pending_key=self.pending_key,
            pending_fingerprint=(
                fingerprint_of(self.pending_key) if self.pending_key is not None else None
            ),
        )


class ContactBook:
    """The pinned identity keys of the people we call. Every change is saved at once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = default_contacts_path() if path is None else Path(path)
        self._records: dict[str, _Record] = self._load()

    def check(self, user: str, public_key: bytes) -> Contact:
        """Pin ``public_key`` on first use; return the contact if the key is the pinned one.

        Raises KeyChangedError if the key differs, or if the contact is CHANGED (whatever key is
        presented) until :meth:`trust` is called.
        """
        fingerprint_of(public_key)  # validates the length
        rec = self._records.get(user)
        if rec is None:
            rec = _Record(key=bytes(public_key), verified=False)
            self._records[user] = rec
            self._save()
            return rec.to_contact(user)
        if rec.pending_key is None and public_key == rec.key:
            return rec.to_contact(user)
        if public_key != rec.key and public_key != rec.pending_key:
            rec.pending_key = bytes(public_key)
            self._save()
        pending = rec.pending_key
        assert pending is not None
        raise KeyChangedError(user, fingerprint_of(rec.key).human, fingerprint_of(pending).human)

    def trust(self, user: str, fingerprint: str) -> Contact:
        """The user checked ``fingerprint`` out of band: pin that key as VERIFIED.

        Accepts the pending key (a changed contact) or the pinned key. Trusting a new key drops
        the retained secrets, which belonged to the old key.
        """
        rec = self._require(user)
        fp = Fingerprint.parse(fingerprint)
        if rec.pending_key is not None and fingerprint_of(rec.pending_key) == fp:
            rec.key, rec.pending_key = rec.pending_key, None
            rec.retained = RetainedSecrets()
        elif fingerprint_of(rec.key) == fp:
            rec.pending_key = None
        else:
            raise UnknownFingerprint(f"{fingerprint!r} is not the fingerprint of any key of {user}")
        rec.verified = True
        self._save()
        return rec.to_contact(user)

    def mark_verified(self, user: str) -> Contact:
        """The users compared the SAS on a call with the pinned key: mark it VERIFIED."""
        rec = self._require(user)
        if rec.pending_key is not None:
            raise KeyChangedError(
                user, fingerprint_of(rec.key).human, fingerprint_of(rec.pending_key).human
            )
        if not rec.verified:
            rec.verified = True
            self._save()
        return rec.to_contact(user)

    def get(self, user: str) -> Contact | None:
        rec = self._records.get(user)
        return rec.to_contact(user) if rec is not None else None

    def all(self) -> list[Contact]:
        return [rec.to_contact(user) for user, rec in sorted(self._records.items())]

    def get_retained(self, user: str) -> RetainedSecrets:
        """The retained secrets for ``user`` (empty if none or unknown)."""
        rec = self._records.get(user)
        if rec is None or rec.pending_key is not None:
            return RetainedSecrets()
        return rec.retained

    def store_retained(self, user: str, secret: bytes) -> None:
        """Keep ``secret`` (``CallKeys.next_retained``) as the current one, the old as previous.

        Call it after a call whose SAS the users confirmed, or whose continuity was a MATCH with
        a VERIFIED contact: a secret from an unauthenticated call would vouch for nobody.
        """
        rec = self._require(user)
        if rec.pending_key is not None:
            raise KeyChangedError(
                user, fingerprint_of(rec.key).human, fingerprint_of(rec.pending_key).human
            )
        copy = bytes(bytearray(secret))  # our own object: CallKeys.erase() wipes theirs
        rec.retained = rec.retained.rotated(copy)
        self._save()

    def _require(self, user: str) -> _Record:
        rec = self._records.get(user)
        if rec is None:
            raise UnknownContact(f"no contact named {user!r}")
        return rec

    def _load(self) -> dict[str, _Record]:
        try:
            raw = read_secret_file(self.path)
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
            if doc.get("version") != _VERSION:
                raise ValueError("unknown version")
            return {user: _decode(item) for user, item in doc["contacts"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InsecureKeyFile(f"{self.path} is not a readable contact book: {exc}") from exc

    def _save(self) -> None:
        doc = {
            "version": _VERSION,
            "contacts": {user: _encode(rec) for user, rec in sorted(self._records.items())},
        }
        data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")
        replace_private_file(self.path, data)


def _hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _bytes_or_none(value: Any, size: int) -> bytes | None:
    if value is None:
        return None
    b = bytes.fromhex(value)
    if len(b) != size:
        raise ValueError("wrong length")
    return b


def _encode(rec: _Record) -> dict[str, Any]:
    return {
        "key": rec.key.hex(),
        "state": "verified" if rec.verified else "unverified",
        "pending_key": _hex_or_none(rec.pending_key),
        "retained": {
            "current": _hex_or_none(rec.retained.current),
            "previous": _hex_or_none(rec.retained.previous),
        },
    }


def _decode(item: dict[str, Any]) -> _Record:
    key = _bytes_or_none(item["key"], 32)
    if key is None or item["state"] not in ("verified", "unverified"):
        raise ValueError("bad contact entry")
    retained = item.get("retained") or {}
    return _Record(
        key=key,
        verified=item["state"] == "verified",
        pending_key=_bytes_or_none(item.get("pending_key"), 32),
        retained=RetainedSecrets(
            current=_bytes_or_none(retained.get("current"), 32),
            previous=_bytes_or_none(retained.get("previous"), 32),
        ),
    )
