"""What the instances of one deployment say to each other on the Redis bus. Pure.

Each instance subscribes to its own channel (``<prefix>inst:<instance id>``). A message is one
compact JSON array, its first element the kind:

    ["env", id, origin, to, from, body]   an envelope for ``to``, who is on the receiving
                                          instance; ``body`` is the sender's base64, untouched
    ["envs", [env, ...]]                  envelopes, each an "env" message, in the order
                                          sent: the route script publishes the envelopes
                                          of one batch for one instance so (one alone as
                                          an "env")
    ["acks", [[id, outcome], ...]]        what became of envelopes this instance forwarded
    ["kick", id, origin, user, session]   ``user`` logged in on ``origin``: close ``session``
    ["kicked", id, allowances | null]     done; the closed session's token levels

Envelope ids are ``<instance id>:<counter>``, unique per process run (a restarted instance gets
a new instance id). Delivery is at most once: nothing is ever re-sent, and the receiver drops
an id it has seen (:class:`SeenIds`), so a message duplicated on the way (a replayed publish)
reaches the user once. The bus is inside the deployment, but its messages are still parsed
strictly: a malformed one raises :class:`BusMessageError` and is dropped, never crashes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

from signaling.handoff import Outcome

MAX_SEEN = 65_536  # envelope ids remembered per instance for duplicate detection
MAX_ACKS = 4_096  # acknowledgements in one message
MAX_ENVELOPES = 4_096  # envelopes in one "envs" message


class BusMessageError(ValueError):
    """A bus message that is not one of the five kinds, well formed."""


@dataclass(frozen=True, slots=True)
class Envelope:
    id: str
    origin: str
    to: str
    from_user: str
    body: str


@dataclass(frozen=True, slots=True)
class Envelopes:
    items: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True)
class Acks:
    items: tuple[tuple[str, Outcome], ...]


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


BusMessage = Envelope | Envelopes | Acks | Kick | Kicked


def encode(message: BusMessage) -> str:
    if isinstance(message, Envelope):
        m = message
        return _dump(["env", m.id, m.origin, m.to, m.from_user, m.body])
    if isinstance(message, Envelopes):
        return f'["envs",[{",".join(encode(m) for m in message.items)}]]'
    if isinstance(message, Acks):
        return _dump(["acks", [[i, str(o)] for i, o in message.items]])
    if isinstance(message, Kick):
        return _dump(["kick", message.id, message.origin, message.user, message.session])
    return _dump(["kicked", message.id, message.allowances])


def parse(data: str | bytes) -> BusMessage:
    """One bus message; BusMessageError for anything else."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BusMessageError("not JSON") from None
    if not isinstance(value, list) or not value:
        raise BusMessageError("not a JSON array")
    kind, rest = value[0], value[1:]
    if kind == "env" and len(rest) == 5 and all(isinstance(v, str) for v in rest):
        return Envelope(*rest)
    if kind == "envs" and len(rest) == 1 and isinstance(rest[0], list):
        if len(rest[0]) > MAX_ENVELOPES:
            raise BusMessageError("too many envelopes")
        return Envelopes(tuple(_envelope(item) for item in rest[0]))
    if kind == "acks" and len(rest) == 1 and isinstance(rest[0], list):
        if len(rest[0]) > MAX_ACKS:
            raise BusMessageError("too many acknowledgements")
        return Acks(tuple(_ack(item) for item in rest[0]))
    if kind == "kick" and len(rest) == 4 and all(isinstance(v, str) for v in rest[:3]):
        session = rest[3]
        if isinstance(session, int) and not isinstance(session, bool):
            return Kick(rest[0], rest[1], rest[2], session)
    kicked = kind == "kicked" and len(rest) == 2 and isinstance(rest[0], str)
    if kicked and (rest[1] is None or isinstance(rest[1], str)):
        return Kicked(rest[0], rest[1])
    raise BusMessageError(f"malformed {str(kind)[:16]!r} message")


class SeenIds:
    """The last ``size`` envelope ids: :meth:`first` is True only the first time an id is seen.

    Bounded, oldest forgotten first. A copy replayed after more than ``size`` newer envelopes
    would get through here; the clients' own replay guards (per sender and call) still drop it.
    """

    def __init__(self, size: int = MAX_SEEN) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first(self, envelope_id: str) -> bool:
        if envelope_id in self._ids:
            self.duplicates += 1
            return False
        self._ids[envelope_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


def _envelope(item: object) -> Envelope:
    fields = item[1:] if isinstance(item, list) and len(item) == 6 and item[0] == "env" else []
    if fields and all(isinstance(v, str) for v in fields):
        return Envelope(*fields)
    raise BusMessageError("malformed envelope in a batch")


def _ack(item: object) -> tuple[str, Outcome]:
    if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
        try:
            return item[0], Outcome(item[1])
        except ValueError:
            pass
    raise BusMessageError("malformed acknowledgement")


def _dump(value: list[object]) -> str:
    return json.dumps(value, separators=(",", ":"))
