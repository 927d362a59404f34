"""Group-call control messages: the payload of a sealed envelope between two members (pure).

Wire format, as for 1:1 calls (:mod:`voice.call.messages`): one canonical JSON object per
payload (UTF-8, keys sorted, no whitespace), ``"v": 1`` and a ``"type"``; binary fields are
standard base64 with padding; at most :data:`MAX_MESSAGE_BYTES`. Every message names its group
(``group``: 16 random bytes made by the creator). Sealing, sender and freshness are the
envelope's job; who may send what is :mod:`voice.group.roster`'s.

| type         | sender  | fields                                                          |
|--------------|---------|-----------------------------------------------------------------|
| `invite`     | creator | `creator` (username), `sfu_url`, `room`, `pin`                  |
| `join`       | invitee | `frame_key` (32 B: the joiner's Ed25519 frame signing key F_i)  |
| `decline`    | either  | (none): an invitee refuses; the creator refuses a join (full)   |
| `roster`     | creator | `epoch`, `members` (1-8 of `user`, `identity_key` 32 B, `index`, |
|              |         | `frame_key` 32 B; in index order), `sfu_url`, `room`, `pin`     |
| `leave`      | member  | `epoch` (the last one the member accepted; 0: none yet)         |
| `removed`    | creator | `epoch` (the first epoch without the recipient)                 |
| `sender_key` | member  | `epoch`, `index`, `generation` (0..65535), `step`, `key`        |
| `commit`     | member  | `epoch`, `index`, `commitment` (32 B)                           |
| `reveal`     | member  | `epoch`, `index`, `nonce` (32 B)                                |
| `end`        | creator | (none): the group call is over for everyone                     |

Ranges: ``epoch`` 1..2**31-1, ``index`` 0..255 (8 bits of the KID), ``generation`` 0..65535 (16
bits), ``step`` 0..2**32-1 (the KID keeps ``step mod 256``), ``room`` 1..2**53, ``pin`` 8-64 chars
of ``A-Z a-z 0-9 _ -``, ``sfu_url`` a ``wss://`` or ``ws://`` URL of at most 256 printable
ASCII characters, usernames as the server's (3-32 of ``a-z 0-9 _ -``, starting with a letter).
A sender ``key`` is 32 bytes at step 0 (a fresh key) and 64 at a later step: SFrame's ratchet
(:func:`voice.group.sframe.ratchet`) makes keys of the suite's hash length, Nh = 64 for suite
0x0005, and a newcomer gets ratcheted keys.

The joiner's frame signing key travels in ``join`` (not in a message of its own): the creator
needs it for the roster that admits the joiner, and one message cannot arrive without the other.

:func:`decode` accepts exactly the bytes :func:`encode` produces: one encoding per message, so
the bytes that were authenticated are the bytes that were understood. Every way a payload can be
wrong raises :class:`voice.errors.BadGroupMessage`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from voice.canonjson import dumps, loads_object
from voice.errors import BadGroupMessage

VERSION: Final = 1
GROUP_ID_BYTES: Final = 16
KEY_BYTES: Final = 32
RATCHETED_KEY_BYTES: Final = 64  # Nh of AES_256_GCM_SHA512_128
MAX_MEMBERS: Final = 8
MAX_INDEX: Final = 255
MAX_EPOCH: Final = 2**31 - 1
MAX_GENERATION: Final = 2**16 - 1
MAX_STEP: Final = 2**32 - 1
MAX_ROOM: Final = 2**53
MAX_URL_CHARS: Final = 256
MAX_MESSAGE_BYTES: Final = 8_192
USERNAME: Final = re.compile(r"[a-z][a-z0-9_-]{2,31}", re.ASCII)
_PIN: Final = re.compile(r"[A-Za-z0-9_-]{8,64}", re.ASCII)
_URL: Final = re.compile(r"wss?://[!-~]+", re.ASCII)

_BINARY: Final[dict[str, int]] = {
    "group": GROUP_ID_BYTES,
    "frame_key": KEY_BYTES,
    "identity_key": KEY_BYTES,
    "key": KEY_BYTES,  # at step 0; SenderKey checks the length that goes with its step
    "commitment": KEY_BYTES,
    "nonce": KEY_BYTES,
}
_RANGES: Final[dict[str, tuple[int, int]]] = {
    "epoch": (1, MAX_EPOCH),
    "index": (0, MAX_INDEX),
    "generation": (0, MAX_GENERATION),
    "step": (0, MAX_STEP),
    "room": (1, MAX_ROOM),
}


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadGroupMessage(f"{name} must be an integer {low}..{high}")


def _check(name: str, value: object) -> None:
    """Raise BadGroupMessage unless ``value`` is valid for the field ``name``."""
    if name in _BINARY:
        size = _BINARY[name]
        if not isinstance(value, bytes) or len(value) != size:
            raise BadGroupMessage(f"{name} must be {size} bytes")
    elif name in _RANGES:
        _check_range(name, value, *_RANGES[name])
    elif name in ("user", "creator"):
        if not isinstance(value, str) or not USERNAME.fullmatch(value):
            raise BadGroupMessage(f"{name} must be a username (3-32 of a-z 0-9 _ -)")
    elif name == "pin":
        if not isinstance(value, str) or not _PIN.fullmatch(value):
            raise BadGroupMessage("pin must be 8-64 chars of A-Z a-z 0-9 _ -")
    elif name == "sfu_url":
        if (
            not isinstance(value, str)
            or len(value) > MAX_URL_CHARS
            or not _URL.fullmatch(value)
            or len(value.split("://", 1)[1].split("/", 1)[0]) == 0
        ):
            raise BadGroupMessage(f"sfu_url must be a ws:// or wss:// URL of <= {MAX_URL_CHARS}")
    else:  # pragma: no cover - every field has a rule
        raise AssertionError(name)


def _check_fields(obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        _check(name, getattr(obj, name))


@dataclass(frozen=True)
class Member:
    """One line of a roster: who, with which identity key, member index and frame key."""

    user: str
    identity_key: bytes
    index: int
    frame_key: bytes

    FIELDS: ClassVar[tuple[str, ...]] = ("user", "identity_key", "index", "frame_key")

    def __post_init__(self) -> None:
        _check_fields(self, self.FIELDS)


def _check_members(members: object) -> None:
    """1..8 members in strictly increasing index order (so indexes are unique), unique users."""
    if not isinstance(members, tuple) or not 1 <= len(members) <= MAX_MEMBERS:
        raise BadGroupMessage(f"members must be 1..{MAX_MEMBERS} roster entries")
    if not all(type(m) is Member for m in members):
        raise BadGroupMessage("members must be roster entries")
    indexes = [m.index for m in members]
    if any(a >= b for a, b in itertools.pairwise(indexes)):
        raise BadGroupMessage("members must be sorted by index, each index once")
    if len({m.user for m in members}) != len(members):
        raise BadGroupMessage("a user appears twice in the roster")


@dataclass(frozen=True)
class _Message:
    """Common part: the group id, checked with every other field when built."""

    TYPE: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[str, ...]] = ()
    group: bytes

    def __post_init__(self) -> None:
        _check("group", self.group)
        for name in self.FIELDS:
            if name == "members":
                _check_members(getattr(self, name))
            else:
                _check(name, getattr(self, name))


@dataclass(frozen=True)
class Invite(_Message):
    """Creator -> a prospective member (a pinned contact): where the group call is."""

    TYPE: ClassVar[str] = "invite"
    FIELDS: ClassVar[tuple[str, ...]] = ("creator", "sfu_url", "room", "pin")
    creator: str
    sfu_url: str
    room: int
    pin: str


@dataclass(frozen=True)
class Join(_Message):
    """Invitee -> creator: the user accepted; carries the joiner's frame signing key."""

    TYPE: ClassVar[str] = "join"
    FIELDS: ClassVar[tuple[str, ...]] = ("frame_key",)
    frame_key: bytes


@dataclass(frozen=True)
class Decline(_Message):
    """Invitee -> creator: the user refused. Creator -> joiner: the join was refused (full)."""

    TYPE: ClassVar[str] = "decline"


@dataclass(frozen=True)
class Roster(_Message):
    """Creator -> every member of ``epoch``: the member list of that epoch, in index order."""

    TYPE: ClassVar[str] = "roster"
    FIELDS: ClassVar[tuple[str, ...]] = ("epoch", "members", "sfu_url", "room", "pin")
    epoch: int
    members: tuple[Member, ...]
    sfu_url: str
    room: int
    pin: str

    def member(self, user: str) -> Member | None:
        """The entry of ``user``, if it is in this roster."""
        return next((m for m in self.members if m.user == user), None)


@dataclass(frozen=True)
class Leave(_Message):
    """Member -> creator: the member hung up. ``epoch`` is the last roster it accepted, 0 if it
    leaves before its first (it joined, and no roster came)."""

    TYPE: ClassVar[str] = "leave"
    FIELDS: ClassVar[tuple[str, ...]] = ("epoch",)
    epoch: int

    def __post_init__(self) -> None:
        _check("group", self.group)
        _check_range("epoch", self.epoch, 0, MAX_EPOCH)


@dataclass(frozen=True)
class Removed(_Message):
    """Creator -> a member who left or was removed: ``epoch`` is the first one without it."""

    TYPE: ClassVar[str] = "removed"
    FIELDS: ClassVar[tuple[str, ...]] = ("epoch",)
    epoch: int


@dataclass(frozen=True)
class SenderKey(_Message):
    """Member ``index`` -> each other member of ``epoch``: its sender base key K_i."""

    TYPE: ClassVar[str] = "sender_key"
    FIELDS: ClassVar[tuple[str, ...]] = ("epoch", "index", "generation", "step", "key")
    epoch: int
    index: int
    generation: int
    step: int
    key: bytes

    def __post_init__(self) -> None:
        for name in ("group", "epoch", "index", "generation", "step"):
            _check(name, getattr(self, name))
        size = KEY_BYTES if self.step == 0 else RATCHETED_KEY_BYTES
        if not isinstance(self.key, bytes) or len(self.key) != size:
            raise BadGroupMessage(f"key must be {size} bytes at step {self.step}")

    def __repr__(self) -> str:  # never print a key
        return (
            f"SenderKey(epoch={self.epoch}, index={self.index}, "
            f"generation={self.generation}, step={self.step})"
        )


@dataclass(frozen=True)
class Commit(_Message):
    """Member ``index`` -> each other member: its commitment C_i to the code nonce of ``epoch``."""

    TYPE: ClassVar[str] = "commit"
    FIELDS: ClassVar[tuple[str, ...]] = ("epoch", "index", "commitment")
    epoch: int
    index: int
    commitment: bytes


@dataclass(frozen=True)
class Reveal(_Message):
    """Member ``index`` -> each other member: the nonce n_i it committed to for ``epoch``."""

    TYPE: ClassVar[str] = "reveal"
    FIELDS: ClassVar[tuple[str, ...]] = ("epoch", "index", "nonce")
    epoch: int
    index: int
    nonce: bytes


@dataclass(frozen=True)
class End(_Message):
    """Creator -> every member and invitee: the group call is over."""

    TYPE: ClassVar[str] = "end"


Message = Invite | Join | Decline | Roster | Leave | Removed | SenderKey | Commit | Reveal | End

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls
    for cls in (Invite, Join, Decline, Roster, Leave, Removed, SenderKey, Commit, Reveal, End)
}


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _to_json(name: str, value: Any) -> Any:
    if name in _BINARY:
        return _b64(value)
    if name == "members":
        return [{n: _to_json(n, getattr(m, n)) for n in Member.FIELDS} for m in value]
    return value


def encode(msg: Message) -> bytes:
    """Canonical JSON bytes for ``msg`` (checked again, so we never send what a peer refuses)."""
    cls = type(msg)
    if MESSAGE_TYPES.get(getattr(cls, "TYPE", "")) is not cls:
        raise BadGroupMessage(f"not a group message: {cls.__name__}")
    msg.__post_init__()
    obj: dict[str, Any] = {"v": VERSION, "type": msg.TYPE, "group": _b64(msg.group)}
    for name in cls.FIELDS:
        obj[name] = _to_json(name, getattr(msg, name))
    data = dumps(obj)
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadGroupMessage(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    return data


def _from_json(name: str, value: Any) -> Any:
    """The Python value of field ``name`` (checked by the dataclass that receives it)."""
    if name in _BINARY:
        if not isinstance(value, str):
            raise BadGroupMessage(f"{name} must be a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadGroupMessage(f"{name} is not base64") from None
    if name == "members":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_MEMBERS:
            raise BadGroupMessage(f"members must be a list of 1..{MAX_MEMBERS} entries")
        entries = []
        for item in value:
            if not isinstance(item, dict) or set(item) != set(Member.FIELDS):
                raise BadGroupMessage(f"a roster entry takes exactly {sorted(Member.FIELDS)}")
            entries.append(Member(**{n: _from_json(n, item[n]) for n in Member.FIELDS}))
        return tuple(entries)
    return value


def decode(data: bytes) -> Message:
    """Parse one payload; raise BadGroupMessage for anything but a canonical, valid message."""
    obj = loads_object(data, MAX_MESSAGE_BYTES, BadGroupMessage)
    version = obj.get("v")
    if version != VERSION or isinstance(version, bool) or type(version) is not int:
        raise BadGroupMessage(f"unsupported version (want {VERSION})")
    kind = obj.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadGroupMessage("unknown message type")
    wanted = {"group", *cls.FIELDS}
    fields = set(obj) - {"v", "type"}
    if fields != wanted:
        raise BadGroupMessage(f"{cls.TYPE} takes fields {sorted(wanted)}, got {sorted(fields)}")
    msg = cls(**{name: _from_json(name, obj[name]) for name in wanted})
    if encode(msg) != data:
        raise BadGroupMessage("payload is not in canonical form")
    return msg
