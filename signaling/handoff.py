"""What the pure router hands to the cluster and gets back, when several instances act as one.

With ``--redis`` the router runs in cluster mode (:mod:`signaling.cluster` carries it out). It
cannot await, so whatever needs another instance leaves it as an action and comes back as a
call: a :class:`Forward` (an envelope for a user not on this instance) comes back as
:meth:`~signaling.router.Router.forwarded` with a :class:`Outcome`; a :class:`Claim` (a login,
made the user's one session cluster-wide) as ``claimed`` or ``claim_failed``. A logged-in
session that ends is reported as :class:`Left`, with the user's :class:`Allowances`, so the
next instance the user logs in to continues the same token buckets. Pure; no I/O.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum

SessionId = int


class Outcome(StrEnum):
    """What became of a forwarded envelope (at most once: it is never sent twice)."""

    OK = "ok"  # handed to the recipient's connection on its instance
    OFFLINE = "offline"  # nobody holds that user now: not delivered
    QUEUE_FULL = "queue_full"  # the recipient's queue was full there: not delivered
    UNREACHABLE = "unreachable"  # no bus, or no acknowledgement in time: not confirmed


@dataclass(frozen=True, slots=True)
class Allowances:
    """A user's token levels at wall time ``at``: its message bucket (None once no session
    holds one), its directory and its TURN allowances. Levels, not grants: restoring one never
    gives more than a bucket left alone since ``at`` would have."""

    messages: float | None
    directory: float
    turn: float
    at: float

    def encode(self) -> str:
        return json.dumps([self.messages, self.directory, self.turn, self.at])

    @classmethod
    def decode(cls, text: str | bytes | None) -> Allowances | None:
        """Allowances as :meth:`encode` wrote them; None for nothing or anything malformed."""
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not isinstance(value, list) or len(value) != 4:
            return None
        if not all(_number(v) for v in value[1:]) or not (value[0] is None or _number(value[0])):
            return None
        return cls(value[0], float(value[1]), float(value[2]), float(value[3]))


@dataclass(frozen=True, slots=True)
class Forward:
    """``to`` is not on this instance: hand the envelope to the bus, then call
    ``Router.forwarded(session, msg_id, to, outcome)`` (which tells an unregistered ``to``
    apart from an offline one: the registry is asked only for an envelope not delivered)."""

    session: SessionId
    msg_id: str
    to: str
    from_user: str
    body: str  # the sender's base64 text, forwarded untouched


@dataclass(frozen=True, slots=True)
class Claim:
    """The login of ``session`` checked out: make it ``user``'s presence cluster-wide (an older
    session on another instance is told and closed), then call ``Router.claimed``."""

    session: SessionId
    user: str


@dataclass(frozen=True, slots=True)
class Left:
    """A logged-in session ended: release its presence (if still its own), keep allowances."""

    user: str
    session: SessionId
    allowances: Allowances


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
