"""Typed wire messages, one frozen dataclass per frame type (see :mod:`signaling.protocol`).

Each class knows its ``TYPE`` and its JSON ``fields()``; parsing lives in the protocol module.
Binary values are bytes here and base64 on the wire, except ``Send.body``: the server keeps it
as the client's base64 text and forwards it untouched, so it never needs to decode envelopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from signaling.wire import b64encode


@dataclass(frozen=True, slots=True)
class Login:
    """``host``: the host the client dialed (normalised); ``binding``: the RFC 5929
    tls-server-end-point hash of the certificate it saw, empty over plain ``ws://``. Both are
    inside the signature; they travel in clear only so that a mismatch gets a precise error."""

    TYPE: ClassVar[str] = "login"
    user: str
    key: bytes
    sig: bytes
    host: str
    binding: bytes

    def fields(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "key": b64encode(self.key),
            "sig": b64encode(self.sig),
            "host": self.host,
            "binding": b64encode(self.binding),
        }


@dataclass(frozen=True, slots=True)
class Send:
    TYPE: ClassVar[str] = "send"
    id: str
    to: str
    body: str  # base64 text, checked strict and bounded, forwarded as is
    body_len: int = 0  # decoded length in bytes (for metrics; never the content)

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.to, "body": self.body}


@dataclass(frozen=True, slots=True)
class Turn:
    TYPE: ClassVar[str] = "turn"
    id: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id}


@dataclass(frozen=True, slots=True)
class Lookup:
    """Key directory: which Ed25519 key owns ``user`` (answered by :class:`Key`)."""

    TYPE: ClassVar[str] = "lookup"
    id: str
    user: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user}


@dataclass(frozen=True, slots=True)
class Challenge:
    """``server``: the configured name (for people); ``server_id``: random per deployment,
    generated once and kept (what clients pin); ``nonce``: fresh per connection."""

    TYPE: ClassVar[str] = "challenge"
    server: str
    server_id: str
    nonce: bytes

    def fields(self) -> dict[str, Any]:
        return {"server": self.server, "server_id": self.server_id, "nonce": b64encode(self.nonce)}


@dataclass(frozen=True, slots=True)
class Welcome:
    TYPE: ClassVar[str] = "welcome"
    user: str

    def fields(self) -> dict[str, Any]:
        return {"user": self.user}


@dataclass(frozen=True, slots=True)
class Sent:
    TYPE: ClassVar[str] = "sent"
    id: str

    def fields(self) -> dict[str, Any]:
        return {"id": self.id}


@dataclass(frozen=True, slots=True)
class Deliver:
    TYPE: ClassVar[str] = "deliver"
    from_user: str
    body: bytes

    def fields(self) -> dict[str, Any]:
        return {"from": self.from_user, "body": b64encode(self.body)}


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    TYPE: ClassVar[str] = "turn_credentials"
    id: str
    username: str
    password: str
    ttl: int
    uris: tuple[str, ...]

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "password": self.password,
            "ttl": self.ttl,
            "uris": list(self.uris),
        }


@dataclass(frozen=True, slots=True)
class Key:
    """The key that owns ``user`` in the registry (trust on first use: the server can lie)."""

    TYPE: ClassVar[str] = "key"
    id: str
    user: str
    key: bytes

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "key": b64encode(self.key)}


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    id: str | None = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.id is not None:
            out["id"] = self.id
        return out


ClientMessage = Login | Send | Turn | Lookup
ServerMessage = Challenge | Welcome | Sent | Deliver | TurnCredentials | Key | Error
