"""Call messages: what goes inside a sealed envelope's payload (pure encode/decode).

Wire format: one canonical JSON object per payload (UTF-8, keys sorted, no whitespace,
``allow_nan`` off), with ``"v": 1`` and a ``"type"``. Binary fields are standard base64 with
padding. The envelope header already carries call_id, seq and timestamp; they are not repeated.

| type      | sender | fields                                                       |
|-----------|--------|--------------------------------------------------------------|
| `offer`   | caller | `commitment` (32 B, keyagreement.commitment_of), `description`, |
|           |        | `versions`, `mlkem_ek` (1184 B or empty)                     |
| `ringing` | callee | `eph_b` (32 B), `continuity_b` (64 B), `description`,        |
|           |        | `versions`, `version`, `mlkem_ct` (1088 B or empty)          |
| `reveal`  | caller | `eph_a` (32 B), `continuity_a` (64 B)                        |
| `accept`  | callee | (none)                                                       |
| `decline` | callee | (none)                                                       |
| `busy`    | callee | (none)                                                       |
| `cancel`  | caller | (none)                                                       |
| `hangup`  | either | (none)                                                       |
| `ice`     | either | `generation`, `answer` (bool), `ice` (`candidates`, `ufrag`, `pwd`)   |
| `hold`    | either | `epoch` (1..2**31-1, the sender's count of hold changes)       |
| `resume`  | either | `epoch`                                                      |
| `error`   | either | `reason` (1-64 chars of ``a-z 0-9 _``, starting with a letter) |

:func:`decode` accepts exactly the bytes :func:`encode` produces and nothing else: one encoding
per message, so the bytes that were authenticated are the bytes that were understood. Every way
a payload can be wrong raises :class:`voice.errors.BadCallMessage`.

Key-agreement versions (voice.crypto.versions): ``versions`` is a list of 1..8 integers
1..255, strictly increasing; ``mlkem_ek`` (1184 B) is present exactly when the offer lists
version 2 (else the empty string), ``mlkem_ct`` (1088 B) exactly when the ringing chose it;
``version`` is one of the ringing's own ``versions``. An offer or ringing without these fields
is the form from before version 2 (``versions`` empty): it still decodes, so that the phone can
answer it with ``unsupported_version`` instead of ignoring it.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from voice.canonjson import dumps, loads_object
from voice.crypto import versions as kav
from voice.crypto.continuity import CONTINUITY_BYTES
from voice.crypto.kem import CIPHERTEXT_BYTES, ENCAPSULATION_KEY_BYTES
from voice.errors import BadCallMessage

VERSION: Final = 1
KEY_BYTES: Final = 32
MAX_DESCRIPTION_BYTES: Final = 16_384
MAX_DESCRIPTION_DEPTH: Final = 8
MAX_MESSAGE_BYTES: Final = 32_768
MAX_JSON_INT: Final = 2**53  # what every JSON reader represents exactly
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _check_key(name: str, value: object) -> None:
    size = CONTINUITY_BYTES if name.startswith("continuity") else KEY_BYTES
    if not isinstance(value, bytes) or len(value) != size:
        raise BadCallMessage(f"{name} must be {size} bytes")


def _check_json(value: object, depth: int) -> None:
    """Refuse anything that is not plain, finite, bounded JSON (depth counts containers)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_JSON_INT:
            raise BadCallMessage("description holds an integer out of range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadCallMessage("description holds a non-finite number")
        return
    if isinstance(value, str):
        _check_text(value)
        return
    if depth >= MAX_DESCRIPTION_DEPTH:
        raise BadCallMessage(f"description nested deeper than {MAX_DESCRIPTION_DEPTH}")
    if isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadCallMessage("description keys must be strings")
            _check_text(key)
            _check_json(item, depth + 1)
        return
    raise BadCallMessage(f"description holds a {type(value).__name__}, not JSON")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadCallMessage("text is not valid Unicode (lone surrogate)") from None


def canonical_description(desc: dict[str, Any]) -> bytes:
    """The one byte string for a media description, fed to the transcript hash on both sides.

    Raises BadCallMessage if ``desc`` is not a bounded JSON object.
    """
    if not isinstance(desc, dict):
        raise BadCallMessage("description must be a JSON object")
    _check_json(desc, 0)
    data = dumps(desc)
    if len(data) > MAX_DESCRIPTION_BYTES:
        raise BadCallMessage(f"description larger than {MAX_DESCRIPTION_BYTES} bytes")
    return data


def _check_versions(versions: object) -> None:
    try:
        kav.check_list(versions)
    except ValueError as exc:
        raise BadCallMessage(f"versions: {exc}") from None
    if not isinstance(versions, tuple):
        raise BadCallMessage("versions must be a tuple")


def _check_sized(name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise BadCallMessage(f"{name} must be {size} bytes here")


@dataclass(frozen=True)
class Offer:
    """Caller -> callee: start a call; commits to the caller's ephemeral key. Carries the
    key-agreement versions the caller supports and, when they include version 2, its ML-KEM
    encapsulation key (empty ``versions``: the form from before version 2)."""

    TYPE: ClassVar[str] = "offer"
    commitment: bytes
    description: dict[str, Any] = field(hash=False)
    versions: tuple[int, ...] = ()
    mlkem_ek: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _check_key("commitment", self.commitment)
        canonical_description(self.description)
        if self.versions == ():
            _check_sized("mlkem_ek", self.mlkem_ek, 0)
            return
        _check_versions(self.versions)
        hybrid = kav.HYBRID in self.versions
        _check_sized("mlkem_ek", self.mlkem_ek, ENCAPSULATION_KEY_BYTES if hybrid else 0)


@dataclass(frozen=True)
class Ringing:
    """Callee -> caller: the phone rings; carries the callee's key and description, its
    versions and the one it chose, and (version 2) its ML-KEM ciphertext."""

    TYPE: ClassVar[str] = "ringing"
    eph_b: bytes
    continuity_b: bytes
    description: dict[str, Any] = field(hash=False)
    versions: tuple[int, ...] = ()
    version: int | None = None
    mlkem_ct: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _check_key("eph_b", self.eph_b)
        _check_key("continuity_b", self.continuity_b)
        canonical_description(self.description)
        if self.versions == () and self.version is None:
            _check_sized("mlkem_ct", self.mlkem_ct, 0)
            return
        _check_versions(self.versions)
        if self.version not in self.versions or isinstance(self.version, bool):
            raise BadCallMessage("version must be one of the ringing's versions")
        hybrid = self.version == kav.HYBRID
        _check_sized("mlkem_ct", self.mlkem_ct, CIPHERTEXT_BYTES if hybrid else 0)


@dataclass(frozen=True)
class Reveal:
    """Caller -> callee: opens the commitment of the offer."""

    TYPE: ClassVar[str] = "reveal"
    eph_a: bytes
    continuity_a: bytes

    def __post_init__(self) -> None:
        _check_key("eph_a", self.eph_a)
        _check_key("continuity_a", self.continuity_a)


@dataclass(frozen=True)
class Accept:
    """Callee -> caller: the user answered and the callee's keys are ready."""

    TYPE: ClassVar[str] = "accept"


@dataclass(frozen=True)
class Decline:
    """Callee -> caller: the user refused the call."""

    TYPE: ClassVar[str] = "decline"


@dataclass(frozen=True)
class Busy:
    """Callee -> caller: already in another call."""

    TYPE: ClassVar[str] = "busy"


@dataclass(frozen=True)
class Cancel:
    """Caller -> callee: stop ringing (the user gave up, or nobody answered in time)."""

    TYPE: ClassVar[str] = "cancel"


@dataclass(frozen=True)
class Hangup:
    """Either side: the call is over."""

    TYPE: ClassVar[str] = "hangup"


@dataclass(frozen=True)
class CallError:
    """Either side: this side failed the call; ``reason`` is a short code such as
    ``commitment_mismatch``."""

    TYPE: ClassVar[str] = "error"
    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not _REASON.fullmatch(self.reason):
            raise BadCallMessage("reason must be 1-64 chars of a-z 0-9 _, starting with a letter")


MAX_ICE_GENERATION: Final = 2**31 - 1


@dataclass(frozen=True)
class Ice:
    """Either side: ICE parameters sent after the commitments, never to a stranger early.

    Generation 0: the callee's candidates, sent to a caller who is not a verified contact only
    once the user accepted (its ringing carried none); ``ice`` holds ``candidates`` only, the
    ufrag and password stay the committed ones. Generation 1 and up: an ICE restart (path lost,
    address changed); ``ice`` holds a fresh ``ufrag``, ``pwd`` and ``candidates``, and
    ``answer`` says whether it answers the peer's restart of that generation or starts one.
    Sent under the call's own keys, so nobody but the peer can redirect the media
    (docs/protocol.md).
    """

    TYPE: ClassVar[str] = "ice"
    generation: int
    ice: dict[str, Any] = field(hash=False)
    answer: bool = False

    def __post_init__(self) -> None:
        g = self.generation
        if not isinstance(g, int) or isinstance(g, bool) or not 0 <= g <= MAX_ICE_GENERATION:
            raise BadCallMessage(f"generation must be an integer 0..{MAX_ICE_GENERATION}")
        canonical_description(self.ice)
        if not isinstance(self.answer, bool) or (g == 0 and self.answer):
            raise BadCallMessage("answer must be a boolean, false for generation 0")
        wanted = {"candidates"} if g == 0 else {"candidates", "ufrag", "pwd"}
        if set(self.ice) != wanted:
            raise BadCallMessage(f"ice of generation {g} takes {sorted(wanted)}")
        candidates = self.ice["candidates"]
        if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
            raise BadCallMessage("ice.candidates must be a list of strings")


MAX_HOLD_EPOCH: Final = 2**31 - 1


def _check_epoch(epoch: object) -> None:
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= MAX_HOLD_EPOCH:
        raise BadCallMessage(f"epoch must be an integer 1..{MAX_HOLD_EPOCH}")


@dataclass(frozen=True)
class Hold:
    """Either side, in a connected call: the sender put the call on hold.

    ``epoch`` numbers the sender's hold changes (hold and resume alike) from 1, so the receiver
    takes only a newer one: the replay guard refuses a copy, but lets through an envelope held
    back and delivered after a later one, which must not flip the state back.
    """

    TYPE: ClassVar[str] = "hold"
    epoch: int

    def __post_init__(self) -> None:
        _check_epoch(self.epoch)


@dataclass(frozen=True)
class Resume:
    """Either side: the sender takes its hold off (``epoch`` as for :class:`Hold`)."""

    TYPE: ClassVar[str] = "resume"
    epoch: int

    def __post_init__(self) -> None:
        _check_epoch(self.epoch)


Message = (
    Offer
    | Ringing
    | Reveal
    | Accept
    | Decline
    | Busy
    | Cancel
    | Hangup
    | CallError
    | Ice
    | Hold
    | Resume
)

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls
    for cls in (
        Offer,
        Ringing,
        Reveal,
        Accept,
        Decline,
        Busy,
        Cancel,
        Hangup,
        CallError,
        Ice,
        Hold,
        Resume,
    )
}
_BINARY: Final = frozenset({"commitment", "eph_a", "eph_b", "continuity_a", "continuity_b"})
_SIZED: Final = frozenset({"mlkem_ek", "mlkem_ct"})  # binary, empty allowed (checked by the type)
_LISTS: Final = frozenset({"versions"})
_NEGOTIATED: Final[dict[str, frozenset[str]]] = {  # only in the form from version 2 on
    "offer": frozenset({"versions", "mlkem_ek"}),
    "ringing": frozenset({"versions", "version", "mlkem_ct"}),
}
_FIELDS: Final[dict[str, frozenset[str]]] = {
    "offer": frozenset({"commitment", "description", "versions", "mlkem_ek"}),
    "ringing": frozenset(
        {"eph_b", "continuity_b", "description", "versions", "version", "mlkem_ct"}
    ),
    "reveal": frozenset({"eph_a", "continuity_a"}),
    "error": frozenset({"reason"}),
    "ice": frozenset({"generation", "ice", "answer"}),
    "hold": frozenset({"epoch"}),
    "resume": frozenset({"epoch"}),
}


def encode(msg: Message) -> bytes:
    """Canonical JSON bytes for ``msg`` (checked again, so we never send what a peer rejects)."""
    cls = type(msg)
    if MESSAGE_TYPES.get(getattr(cls, "TYPE", "")) is not cls:
        raise BadCallMessage(f"not a call message: {cls.__name__}")
    obj: dict[str, Any] = {"v": VERSION, "type": msg.TYPE}
    for name in _fields_of(msg):
        value = getattr(msg, name)
        if name in _BINARY:
            _check_key(name, value)
            value = base64.b64encode(value).decode("ascii")
        elif name in _SIZED:
            value = base64.b64encode(value).decode("ascii")
        elif name in _LISTS:
            _check_versions(value)
            value = list(value)
        elif name in ("description", "ice"):
            canonical_description(value)  # a dict can change after the message was built
        obj[name] = value
    data = dumps(obj)
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadCallMessage(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    return data


def _fields_of(msg: Message) -> frozenset[str]:
    """The fields ``msg`` is encoded with: an offer or ringing without versions uses the form
    from before version 2, without the negotiation fields."""
    wanted = _FIELDS.get(msg.TYPE, frozenset())
    if isinstance(msg, Offer | Ringing) and msg.versions == ():
        return wanted - _NEGOTIATED[msg.TYPE]
    return wanted


def decode(data: bytes) -> Message:
    """Parse one payload; raise BadCallMessage for anything but a canonical, valid message."""
    obj = loads_object(data, MAX_MESSAGE_BYTES, BadCallMessage)
    if obj.get("v") != VERSION or isinstance(obj.get("v"), bool):
        raise BadCallMessage(f"unsupported version (want {VERSION})")
    kind = obj.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadCallMessage("unknown message type")
    wanted = _FIELDS.get(cls.TYPE, frozenset())
    fields = set(obj) - {"v", "type"}
    legacy = wanted - _NEGOTIATED.get(cls.TYPE, frozenset())
    if fields != wanted and fields != legacy:
        raise BadCallMessage(f"{cls.TYPE} takes fields {sorted(wanted)}, got {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name in fields:
        value = obj[name]
        if name in _BINARY or name in _SIZED:
            if not isinstance(value, str):
                raise BadCallMessage(f"{name} must be a base64 string")
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise BadCallMessage(f"{name} is not base64") from None
        elif name in _LISTS:
            if not isinstance(value, list):
                raise BadCallMessage(f"{name} must be a list")
            value = tuple(value)
        elif name in ("description", "ice") and not isinstance(value, dict):
            raise BadCallMessage(f"{name} must be a JSON object")
        kwargs[name] = value
    msg = cls(**kwargs)
    if encode(msg) != data:
        raise BadCallMessage("payload is not in canonical form")
    return msg
