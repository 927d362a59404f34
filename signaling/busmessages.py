"""What the instances of one deployment say to each other on the Redis bus. Pure.

Each instance subscribes to its own channel (``<prefix>inst:<instance id>``). Envelopes and
their acknowledgements travel as lines of text, so that a busy instance handles one bus
message per batch with a few string splits, never a JSON document per envelope:

    v2 <origin>                    the first line: this protocol, the instance that sent it
    e<id> <to> <from> <frame>      an envelope for ``to``, who is on the receiving instance:
                                   ``frame`` is the ``deliver`` frame the origin built, sent to
                                   ``to``'s connection as is (``from`` set by the origin)
    a<first>[-<last>]              envelopes ``first``..``last`` of the receiving instance
                                   were handed to their recipients' connections
    x<id> <outcome>                envelope ``id`` of the receiving instance was not delivered
                                   (``offline``, ``queue_full``)

Lines of either kind, for one instance, share one message (the flush script groups them).
Usernames, decimal ids and a ``deliver`` frame (JSON: no raw newline) hold no newline, and
the first three no space. Two rare messages stay JSON arrays:

    ["kick", id, origin, user, session]   ``user`` logged in on ``origin``: close ``session``
    ["kicked", id, allowances | null]     done; the closed session's token levels

Envelope ids count up from 1 per process run (a restarted instance gets a new instance id),
and the envelopes of one origin reach an instance in the order of their ids (one ordered
connection to Redis, one channel out of it). Delivery is at most once: nothing is ever re-sent,
and the receiver drops an id not above the last it took from that origin (:class:`SeenIds`),
so a message repeated on the way (a replayed publish) reaches the user once. The bus is inside
the deployment, but its messages are still parsed strictly: a malformed one raises
:class:`BusMessageError` and is dropped whole, never crashes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from signaling.handoff import Outcome
from signaling.protocol import deliver_frame
from signaling.wire import USERNAME_RE

VERSION = "v2"
MAX_ORIGINS = 4_096  # instances whose last envelope id is remembered (the oldest forgotten)
MAX_LINES = 8_192  # records in one bus message
# A record's body: base64 characters, which the deliver frame holds without escaping (the
# origin checked it strictly; the recipient's client decodes it strictly again).
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)
_NOT_DELIVERED = {
    Outcome.OFFLINE.value: Outcome.OFFLINE,
    Outcome.QUEUE_FULL.value: Outcome.QUEUE_FULL,
}


class BusMessageError(ValueError):
    """A bus message that is not one of the kinds above, well formed."""


@dataclass(slots=True)
class Batch:
    """One bus message of envelopes and acknowledgements, from ``origin``. Tuples, not an
    object per envelope: a batch may hold thousands."""

    origin: str
    envelopes: list[tuple[int, str, str, str]] = field(default_factory=list)  # id to from frame
    # (the deliver frame for ``to``, built from the record's sender and body)
    delivered: list[tuple[int, int]] = field(default_factory=list)  # first, last (inclusive)
    refused: list[tuple[int, Outcome]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Kick:
    id: str
    origin: str
    user: str
    session: int


@dataclass(frozen=True, slots=True)
class Kicked:
    id: str
    allowances: str | None  # Allowances.encode(), or None: no such session any more


BusMessage = Batch | Kick | Kicked


def header(origin: str) -> str:
    """The first line of every batch ``origin`` sends (the flush script prepends it)."""
    return f"{VERSION} {origin}"


def envelope_line(envelope_id: int, to: str, from_user: str, body: str) -> str:
    """An envelope's record: ``body`` is the sender's base64 text, as the client sent it."""
    return f"e{envelope_id} {to} {from_user} {body}"


def ack_lines(delivered: Sequence[int], refused: Iterable[tuple[int, Outcome]]) -> str:
    """The acknowledgements of envelopes from one origin: the delivered ids (ascending, as
    they arrive) as ranges, then each refused one with its outcome."""
    lines: list[str] = []
    start = prev = -1
    for n in delivered:
        if n != prev + 1 and prev >= 0:
            lines.append(_range(start, prev))
            start = n
        elif prev < 0:
            start = n
        prev = n
    if prev >= 0:
        lines.append(_range(start, prev))
    lines += [f"x{n} {outcome.value}" for n, outcome in refused]
    return "\n".join(lines)


def encode_kick(message: Kick | Kicked) -> str:
    if isinstance(message, Kick):
        return _dump(["kick", message.id, message.origin, message.user, message.session])
    return _dump(["kicked", message.id, message.allowances])


def parse(data: str | bytes) -> BusMessage:
    """One bus message; BusMessageError for anything else."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise BusMessageError("not UTF-8") from None
    if text.startswith("["):
        return _parse_json(text)
    lines = text.split("\n")
    version, _, origin = lines[0].partition(" ")
    if version != VERSION or not origin or " " in origin:
        raise BusMessageError(f"not a {VERSION} batch: {lines[0][:32]!r}")
    if len(lines) > MAX_LINES + 1:
        raise BusMessageError("too many records")
    batch = Batch(origin)
    try:
        for line in lines[1:]:
            _record(line, batch)
    except (ValueError, IndexError, KeyError):
        raise BusMessageError(f"malformed record in a batch from {origin[:32]!r}") from None
    return batch


class SeenIds:
    """The last envelope id taken from each origin: :meth:`first` is True only for an id above
    it. Ids of one origin arrive in increasing order, so anything else is a repeat.

    Bounded to ``origins`` instances (the one heard from longest ago forgotten first): a copy
    from a forgotten origin would get through here; the clients' own replay guards (per sender
    and call) still drop it.
    """

    def __init__(self, origins: int = MAX_ORIGINS) -> None:
        self._origins = origins
        self._last: dict[str, int] = {}
        self.duplicates = 0

    def first(self, origin: str, envelope_id: int) -> bool:
        last = self._last.get(origin)
        if last is not None and envelope_id <= last:
            self.duplicates += 1
            return False
        if last is None and len(self._last) >= self._origins:
            del self._last[next(iter(self._last))]
        self._last[origin] = envelope_id
        return True

    def heard(self, origin: str) -> None:
        """``origin`` is still sending: forget it last (once per batch, not per envelope)."""
        last = self._last.pop(origin, None)
        if last is not None:
            self._last[origin] = last


def _record(line: str, batch: Batch) -> None:
    kind, rest = line[0], line[1:]
    if kind == "e":
        number, to, from_user, body = rest.split(" ", 3)
        names_ok = USERNAME_RE.fullmatch(to) and USERNAME_RE.fullmatch(from_user)
        if not names_ok or _BASE64.fullmatch(body) is None:
            raise ValueError("not an envelope")
        batch.envelopes.append((_id(number), to, from_user, deliver_frame(from_user, body)))
    elif kind == "a":
        first, _, last = rest.partition("-")
        lo = _id(first)
        hi = _id(last) if last else lo
        if hi < lo:
            raise ValueError("empty range")
        batch.delivered.append((lo, hi))
    elif kind == "x":
        number, outcome = rest.split(" ")
        batch.refused.append((_id(number), _NOT_DELIVERED[outcome]))
    else:
        raise ValueError("unknown record")


def _id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise ValueError("not an envelope id")
    return int(text)


def _range(first: int, last: int) -> str:
    return f"a{first}" if first == last else f"a{first}-{last}"


def _parse_json(text: str) -> Kick | Kicked:
    try:
        value = json.loads(text)
    except ValueError:
        raise BusMessageError("not JSON") from None
    if not isinstance(value, list) or not value:
        raise BusMessageError("not a JSON array")
    kind, rest = value[0], value[1:]
    if kind == "kick" and len(rest) == 4 and all(isinstance(v, str) for v in rest[:3]):
        session = rest[3]
        if isinstance(session, int) and not isinstance(session, bool):
            return Kick(rest[0], rest[1], rest[2], session)
    kicked = kind == "kicked" and len(rest) == 2 and isinstance(rest[0], str)
    if kicked and (rest[1] is None or isinstance(rest[1], str)):
        return Kicked(rest[0], rest[1])
    raise BusMessageError(f"malformed {str(kind)[:16]!r} message")


def _dump(value: list[object]) -> str:
    return json.dumps(value, separators=(",", ":"))
