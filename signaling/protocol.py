"""Signaling wire protocol, version 1: frames, error codes, close codes, and the one parser.

Sans-I/O: text in, typed messages out (or :class:`~signaling.errors.FrameError` with a code);
typed messages in, text out. The server and the client (``voice.net.client``) both use it.
``docs/protocol.md`` has the same contract with examples.

Frames
    WebSocket text frames, each one JSON object with ``"v": 1`` and a ``"type"``. No other keys
    than those listed; none missing (``id`` of ``error`` is the only optional field). Binary
    values are standard base64 with padding (RFC 4648 section 4), canonical, strictly checked.
    Usernames: 3-32 characters of ``a-z 0-9 _ -``, starting with a letter. Message ids: 1-64
    characters chosen by the client, echoed back. Duplicate keys, NaN and Infinity are refused.

    ======  ====================  ==============================================================
    dir     type                  fields
    ======  ====================  ==============================================================
    S->C    challenge             server (name, 1-255 chars), server_id (16-64 chars of a-z 0-9 -),
                                  nonce (b64, 32 bytes); sent first
    C->S    login                 user, key (b64 Ed25519 public key, 32 B), sig (b64, 64 B),
                                  host (the host dialed, normalised), binding (b64, 0-64 B)
    S->C    welcome               user
    C->S    send                  id, to, body (b64, opaque to the server, bounded)
    S->C    sent                  id (the envelope was handed to the recipient's connection)
    S->C    deliver               from (the sender's login, set by the server), body
    C->S    turn                  id
    S->C    turn_credentials      id, username, password, ttl (s), uris (list of TURN URIs)
    C->S    lookup                id, user (key directory: who owns this username?)
    S->C    key                   id, user, key (b64 Ed25519 public key that owns user, 32 B)
    S->C    error                 code, message, and id when it answers a client message
    ======  ====================  ==============================================================

    Every client frame gets exactly one answer: ``welcome``, ``sent``, ``turn_credentials``,
    ``key`` or ``error``; an ``error`` always reaches the client before any close the server starts.

Login
    The signature is Ed25519 over :func:`login_message`: ``b"voice-login-v2" || lp(server) ||
    lp(server_id) || lp(host) || lp(binding) || lp(user) || lp(key) || lp(nonce)`` with
    ``lp(x)`` = 4-byte big-endian length, then ``x`` (strings as UTF-8). ``binding`` is the RFC
    5929 tls-server-end-point hash of the certificate the client saw (:mod:`signaling.auth`),
    empty over plain ``ws://``; ``host`` is the host it dialed. A server accepts only its own
    binding and host names (``wrong_server`` otherwise), so a relaying server's victim signs
    the relay's certificate and host, which the real server refuses. One challenge per
    connection, one login attempt per challenge: any error answering a login closes the
    connection (4001); a login after a successful one gets ``already_logged_in``. The first
    key to log in with a username owns it for good.

Error codes (``error.code``); "closes" means the server then closes with the code shown
    bad_json, bad_frame          not a JSON object / binary frame, invalid UTF-8, bad framing
    bad_type, bad_version        a field has the wrong JSON type / ``v`` is not 1
    unknown_type                 ``type`` is not one this side accepts
    missing_field, extra_field   a required key is absent / a key is not in the table
    too_large                    frame over the size limit (closes, 1009)
    too_deep                     JSON nested deeper than 4 levels
    bad_base64, bad_id           not strict base64 of the right length / id not 1-64 chars
    bad_username                 a username breaks the rules (closes 4001 if in a login)
    not_logged_in                send/turn/lookup before login
    already_logged_in            a second login on a logged-in connection
    bad_signature                the login signature does not verify (closes 4001)
    wrong_server                 the login is bound to another certificate or host (closes 4001)
    username_taken               another key owns the username, or it is reserved (closes 4001)
    registration_closed          a new username needs an invitation here (closes 4001)
    registration_limited         too many new usernames (address, server) or users (closes 4001)
    bad_invite                   the invitation is unknown, used, expired or for another name
                                 (closes 4001)
    login_timeout                no login before the deadline (closes 4002)
    replaced                     the same user logged in on a newer connection (closes 4003)
    too_many_connections         per-IP or server-wide connection limit (closes 4004)
    queue_full                   this connection's outbound queue overflowed (closes 4005); with
                                 an ``id``: the recipient's queue was full, envelope dropped (the
                                 recipient is not closed for it)
    unknown_user, offline        the recipient (or looked-up user) is not registered / not connected
    rate_limited                 over a per-user rate (messages, directory, TURN); dropped
    body_too_large               the decoded body is over the body limit
    turn_unavailable             the server has no TURN secret and URIs configured
    internal                     a server bug while handling this connection (closes 4011)

Close codes
    4001 login failed, 4002 login timeout, 4003 replaced, 4004 too many connections,
    4005 queue full, 4011 internal error; 1001 server shutting down; 1009 frame too large,
    1007 invalid UTF-8, 1002 WebSocket protocol violation (each after its ``error`` frame);
    1011 keepalive ping timeout (the peer went silent or stopped reading: no error frame).
"""

from __future__ import annotations

import json
import struct
from enum import IntEnum, StrEnum
from typing import Any

from signaling.errors import FrameError
from signaling.messages import (
    Challenge,
    ClientMessage,
    Deliver,
    Error,
    Key,
    Login,
    Lookup,
    Send,
    Sent,
    ServerMessage,
    Turn,
    TurnCredentials,
    Welcome,
)
from signaling.wire import (
    check_depth,
    field_b64,
    field_host,
    field_id,
    field_str,
    field_username,
    is_server_id,
    readable_id,
)

__all__ = [
    "LOGIN_CONTEXT",
    "MAX_DEPTH",
    "VERSION",
    "CloseCode",
    "ErrorCode",
    "deliver_frame",
    "encode",
    "login_message",
    "parse_client_frame",
    "parse_server_frame",
]

VERSION = 1
LOGIN_CONTEXT = b"voice-login-v2"
MAX_DEPTH = 4
MIN_BINDING_BYTES, MAX_BINDING_BYTES = 28, 64  # SHA-224 .. SHA-512 (RFC 5929 end-point hash)
DEFAULT_MAX_FRAME_BYTES = 65_536
DEFAULT_MAX_BODY_BYTES = 32_768
_MAX_TEXT = 1_024  # error messages, TURN usernames and passwords, URIs


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    BAD_TYPE = "bad_type"
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    EXTRA_FIELD = "extra_field"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    BAD_BASE64 = "bad_base64"
    BAD_ID = "bad_id"
    BAD_USERNAME = "bad_username"
    NOT_LOGGED_IN = "not_logged_in"
    ALREADY_LOGGED_IN = "already_logged_in"
    BAD_SIGNATURE = "bad_signature"
    WRONG_SERVER = "wrong_server"
    USERNAME_TAKEN = "username_taken"
    REGISTRATION_CLOSED = "registration_closed"
    REGISTRATION_LIMITED = "registration_limited"
    BAD_INVITE = "bad_invite"
    LOGIN_TIMEOUT = "login_timeout"
    REPLACED = "replaced"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    QUEUE_FULL = "queue_full"
    UNKNOWN_USER = "unknown_user"
    OFFLINE = "offline"
    RATE_LIMITED = "rate_limited"
    BODY_TOO_LARGE = "body_too_large"
    TURN_UNAVAILABLE = "turn_unavailable"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    LOGIN_FAILED = 4001
    LOGIN_TIMEOUT = 4002
    REPLACED = 4003
    TOO_MANY_CONNECTIONS = 4004
    QUEUE_FULL = 4005
    INTERNAL = 4011


def login_message(
    *,
    server: str,
    server_id: str,
    host: str,
    binding: bytes,
    user: str,
    key: bytes,
    nonce: bytes,
) -> bytes:
    """The exact bytes a client signs to log in (login v2), and the server checks.

    Binds the challenge (``server``, ``server_id``, ``nonce``) to what the client saw of the
    connection (the ``host`` it dialed, the ``binding`` of the certificate it verified) and to
    the account (``user``, ``key``).
    """
    parts = (
        server.encode("utf-8"),
        server_id.encode("utf-8"),
        host.encode("utf-8"),
        bytes(binding),
        user.encode("utf-8"),
        bytes(key),
        bytes(nonce),
    )
    return LOGIN_CONTEXT + b"".join(struct.pack(">I", len(p)) + p for p in parts)


def encode(message: ClientMessage | ServerMessage) -> str:
    """Serialise one message as a v1 text frame (ASCII-only JSON, compact)."""
    frame: dict[str, Any] = {"v": VERSION, "type": message.TYPE, **message.fields()}
    return json.dumps(frame, separators=(",", ":"))


def parse_client_frame(
    data: str | bytes,
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> ClientMessage:
    """Parse a frame a client sent; raise :class:`FrameError` with the code for what is wrong."""
    obj, kind = _envelope(data, max_frame_bytes, {"login", "send", "turn", "lookup"})
    try:
        return _client_message(obj, kind, max_body_bytes)
    except FrameError as exc:
        exc.kind = kind
        raise


_DELIVER_HEAD = f'{{"v":{VERSION},"type":"deliver","from":"'


def deliver_frame(from_user: str, body_b64: str) -> str:
    """The ``deliver`` frame for a body the server forwards as the sender's base64 text.

    ``from_user`` must be a checked username and ``body_b64`` checked base64 (the router's
    come from parsed frames, the bus's from :mod:`signaling.busmessages`, which checks both):
    neither holds a character JSON escapes, so one format string makes the very text
    ``json.dumps`` would, without an encoder per envelope."""
    return f'{_DELIVER_HEAD}{from_user}","body":"{body_b64}"}}'


def _client_message(obj: dict[str, Any], kind: str, max_body_bytes: int) -> ClientMessage:
    if kind == "login":
        _keys(obj, ("user", "key", "sig", "host", "binding"), ())
        return Login(
            user=field_username(obj, "user"),
            key=field_b64(obj, "key", exact=32),
            sig=field_b64(obj, "sig", exact=64),
            host=field_host(obj, "host"),
            binding=_binding(obj),
        )
    if kind == "send":
        _keys(obj, ("id", "to", "body"), ())
        msg_id = field_id(obj)
        to = field_username(obj, "to", msg_id)
        raw = field_b64(obj, "body", msg_id, max_len=max_body_bytes)
        return Send(id=msg_id, to=to, body=obj["body"], body_len=len(raw))
    if kind == "lookup":
        _keys(obj, ("id", "user"), ())
        msg_id = field_id(obj)
        return Lookup(id=msg_id, user=field_username(obj, "user", msg_id))
    _keys(obj, ("id",), ())
    return Turn(id=field_id(obj))


def parse_server_frame(
    data: str | bytes, *, max_frame_bytes: int = 4 * DEFAULT_MAX_FRAME_BYTES
) -> ServerMessage:
    """Parse a frame a server sent (client side); a hostile server gets no further than this."""
    kinds = {"challenge", "welcome", "sent", "deliver", "turn_credentials", "key", "error"}
    obj, kind = _envelope(data, max_frame_bytes, kinds)
    if kind == "challenge":
        _keys(obj, ("server", "server_id", "nonce"), ())
        server_id = field_str(obj, "server_id", max_chars=64)
        if not is_server_id(server_id):
            raise FrameError(ErrorCode.BAD_TYPE, "'server_id' must be 16-64 of a-z 0-9 -")
        return Challenge(
            server=field_str(obj, "server", max_chars=255),
            server_id=server_id,
            nonce=field_b64(obj, "nonce", exact=32),
        )
    if kind == "welcome":
        _keys(obj, ("user",), ())
        return Welcome(user=field_username(obj, "user"))
    if kind == "sent":
        _keys(obj, ("id",), ())
        return Sent(id=field_id(obj))
    if kind == "deliver":
        _keys(obj, ("from", "body"), ())
        return Deliver(from_user=field_username(obj, "from"), body=field_b64(obj, "body"))
    if kind == "key":
        _keys(obj, ("id", "user", "key"), ())
        msg_id = field_id(obj)
        return Key(
            id=msg_id,
            user=field_username(obj, "user", msg_id),
            key=field_b64(obj, "key", msg_id, exact=32),
        )
    if kind == "turn_credentials":
        _keys(obj, ("id", "username", "password", "ttl", "uris"), ())
        ttl = obj["ttl"]
        uris = obj["uris"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl < 2**31:
            raise FrameError(ErrorCode.BAD_TYPE, "ttl must be a positive integer")
        if not isinstance(uris, list) or not 0 < len(uris) <= 16:
            raise FrameError(ErrorCode.BAD_TYPE, "uris must be a list of 1-16 strings")
        if not all(isinstance(u, str) and 0 < len(u) <= _MAX_TEXT for u in uris):
            raise FrameError(ErrorCode.BAD_TYPE, "uris must be a list of 1-16 strings")
        return TurnCredentials(
            id=field_id(obj),
            username=field_str(obj, "username", max_chars=_MAX_TEXT),
            password=field_str(obj, "password", max_chars=_MAX_TEXT),
            ttl=ttl,
            uris=tuple(uris),
        )
    _keys(obj, ("code", "message"), ("id",))
    return Error(
        code=field_str(obj, "code", max_chars=64),
        message=field_str(obj, "message", max_chars=_MAX_TEXT, min_chars=0),
        id=field_id(obj) if "id" in obj else None,
    )


def _binding(obj: dict[str, Any]) -> bytes:
    """A tls-server-end-point hash (RFC 5929: 28 to 64 bytes), or empty over plain ws://."""
    value = field_b64(obj, "binding")  # the frame size bounds the decoding
    if value and not MIN_BINDING_BYTES <= len(value) <= MAX_BINDING_BYTES:
        raise FrameError(ErrorCode.BAD_BASE64, "'binding' must be empty or 28-64 bytes")
    return value


def _envelope(data: str | bytes, max_bytes: int, kinds: set[str]) -> tuple[dict[str, Any], str]:
    """Checks shared by every frame: size, depth, JSON, object, ``v``, ``type``."""
    if not isinstance(data, str):
        raise FrameError(ErrorCode.BAD_FRAME, "binary frames are not accepted; send JSON text")
    size = len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise FrameError(ErrorCode.TOO_LARGE, f"frame is {size} bytes; the limit is {max_bytes}")
    check_depth(data, MAX_DEPTH)
    try:
        obj = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FrameError(ErrorCode.BAD_JSON, f"not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise FrameError(ErrorCode.BAD_TYPE, "a frame must be a JSON object")
    msg_id = readable_id(obj)
    for key in ("v", "type"):
        if key not in obj:
            raise FrameError(ErrorCode.MISSING_FIELD, f"missing field {key!r}", id=msg_id)
    version, kind = obj.pop("v"), obj.pop("type")
    if isinstance(version, bool) or not isinstance(version, int):
        raise FrameError(ErrorCode.BAD_TYPE, "'v' must be an integer", id=msg_id)
    if version != VERSION:
        raise FrameError(ErrorCode.BAD_VERSION, f"protocol version must be {VERSION}", id=msg_id)
    if not isinstance(kind, str):
        raise FrameError(ErrorCode.BAD_TYPE, "'type' must be a string", id=msg_id)
    if kind not in kinds:
        raise FrameError(ErrorCode.UNKNOWN_TYPE, "unknown frame type", id=msg_id)
    return obj, kind


def _keys(obj: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    msg_id = readable_id(obj)
    for key in required:
        if key not in obj:
            raise FrameError(ErrorCode.MISSING_FIELD, f"missing field {key!r}", id=msg_id)
    extra = sorted(set(obj) - set(required) - set(optional))
    if extra:
        name = extra[0] if extra[0].isprintable() and len(extra[0]) <= 32 else "?"
        raise FrameError(ErrorCode.EXTRA_FIELD, f"unexpected field {name!r}", id=msg_id)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
