"""The contact book's file: its records, its JSON format and the versions it reads.

Version 2 (written)::

    {"version": 2, "servers": {"ws://host:8765": {"bob": {
        "key": hex, "state": "unverified" | "verified", "introduced": "lookup" | "offer" | "trust",
        "pending_key": hex | null, "pending_source": "lookup" | "offer" | null, "calls": int,
        "retained": {"current": hex | null, "previous": hex | null}}}}}

Version 1 (read): ``{"version": 1, "contacts": {"bob": {...}}}``, one flat list; its contacts go
to the scope :data:`LEGACY` until the first server adopts them (voice.crypto.contacts).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from voice.crypto.continuity import RetainedSecrets

__all__ = ["LEGACY", "VERSION", "Books", "KeySource", "Record", "decode_book", "encode_book"]

VERSION = 2
LEGACY = "(version 1)"  # a version 1 book's contacts, until the first server adopts them


class KeySource(enum.Enum):
    """Where we learned a key. For LOOKUP and OFFER only the server vouches that the key is the
    user's: the user must check its fingerprint before trusting it."""

    LOOKUP = "lookup"  # the server's key directory, when we dialed the user
    OFFER = "offer"  # an incoming call sealed under that key, from the user the server named
    TRUST = "trust"  # the user typed the fingerprint after checking it out of band

    @property
    def description(self) -> str:
        return {
            KeySource.LOOKUP: "a key lookup",
            KeySource.OFFER: "an incoming call",
            KeySource.TRUST: "your voice trust",
        }[self]


@dataclass
class Record:
    key: bytes
    verified: bool
    introduced: KeySource = KeySource.LOOKUP
    calls: int = 0
    pending_key: bytes | None = None
    pending_source: KeySource | None = None
    retained: RetainedSecrets = field(default_factory=RetainedSecrets)


Books = dict[str, dict[str, Record]]
"""server -> username -> record."""


def encode_book(books: Books) -> bytes:
    doc = {
        "version": VERSION,
        "servers": {
            server: {user: _encode(rec) for user, rec in sorted(records.items())}
            for server, records in sorted(books.items())
            if records
        },
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _bytes_or_none(value: Any, size: int) -> bytes | None:
    if value is None:
        return None
    b = bytes.fromhex(value)
    if len(b) != size:
        raise ValueError("wrong length")
    return b


def _encode(rec: Record) -> dict[str, Any]:
    return {
        "key": rec.key.hex(),
        "state": "verified" if rec.verified else "unverified",
        "introduced": rec.introduced.value,
        "calls": rec.calls,
        "pending_key": _hex_or_none(rec.pending_key),
        "pending_source": rec.pending_source.value if rec.pending_source else None,
        "retained": {
            "current": _hex_or_none(rec.retained.current),
            "previous": _hex_or_none(rec.retained.previous),
        },
    }


def decode_book(doc: Any) -> Books:
    if doc.get("version") == 1:
        return {LEGACY: {user: _decode(item) for user, item in doc["contacts"].items()}}
    if doc.get("version") != VERSION:
        raise ValueError("unknown version")
    return {
        str(server): {str(user): _decode(item) for user, item in records.items()}
        for server, records in doc["servers"].items()
    }


def _decode(item: dict[str, Any]) -> Record:
    key = _bytes_or_none(item["key"], 32)
    if key is None or item["state"] not in ("verified", "unverified"):
        raise ValueError("bad contact entry")
    verified = item["state"] == "verified"
    # Version 1 did not record where a key came from: an unverified one may have been pinned by
    # anyone who called, so it gets the unsolicited budget until a call connects.
    default_source = KeySource.LOOKUP if verified else KeySource.OFFER
    introduced = KeySource(item.get("introduced", default_source.value))
    pending = _bytes_or_none(item.get("pending_key"), 32)
    pending_source = item.get("pending_source")
    calls = item.get("calls", 0)
    if not isinstance(calls, int) or isinstance(calls, bool) or calls < 0:
        raise ValueError("bad call count")
    retained = item.get("retained") or {}
    return Record(
        key=key,
        verified=verified,
        introduced=introduced,
        calls=calls,
        pending_key=pending,
        pending_source=(
            KeySource(pending_source) if pending_source else KeySource.LOOKUP if pending else None
        ),
        retained=RetainedSecrets(
            current=_bytes_or_none(retained.get("current"), 32),
            previous=_bytes_or_none(retained.get("previous"), 32),
        ),
    )
