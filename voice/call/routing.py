"""Decisions that span calls, pure: where a message goes, busy, and glare.

A phone holds at most one live call. The inbound decision and the phone pass a snapshot of
their calls (:class:`CallInfo`, ended ones included for a while so a replayed offer cannot ring
again) and get a decision back.

Glare: both users dial each other at once. Each side sees an offer from the peer while its own
offer to that peer is unanswered (DIALING or RINGING_OUT). The call with the larger call_id
(bytes compared as big-endian numbers) wins on both sides: the winner ignores the peer's offer;
the loser feeds GlareLost to its own call (which sends ``cancel``) and answers the winner's
offer. Both ends end up in one call with the same call_id, with no extra round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from voice.call.events import Role, State
from voice.call.messages import Message, Offer
from voice.crypto.keyschedule import CALL_ID_BYTES

_GLARE_STATES = (State.DIALING, State.RINGING_OUT)
_INCOMING = (State.OFFERED, State.RINGING_IN)


@dataclass(frozen=True)
class CallInfo:
    call_id: bytes
    peer: str
    role: Role
    state: State


@dataclass(frozen=True)
class Answer:
    """Make a callee CallMachine for this call_id and feed it the offer."""


@dataclass(frozen=True)
class AnswerBusy:
    """Send ``busy`` on this call_id; make no machine."""


@dataclass(frozen=True)
class IgnoreOffer:
    """Drop the offer: our own call to this peer wins the glare."""


@dataclass(frozen=True)
class LoseGlare:
    """Feed GlareLost to our call ``abandon``, then Answer the offer."""

    abandon: bytes


@dataclass(frozen=True)
class Deliver:
    """Hand the message to the machine of this call (``CallMachine.receive``)."""


@dataclass(frozen=True)
class Reject:
    """Drop the message; ``reason`` is for the log."""

    reason: str


@dataclass(frozen=True)
class Dial:
    """No live call: go ahead."""


@dataclass(frozen=True)
class AcceptInstead:
    """The peer is calling us right now: accept that call rather than dialing a second one."""

    call_id: bytes


@dataclass(frozen=True)
class AlreadyInCall:
    call_id: bytes


OfferDecision = Answer | AnswerBusy | IgnoreOffer | LoseGlare | Reject
RouteDecision = OfferDecision | Deliver
DialDecision = Dial | AcceptInstead | AlreadyInCall


def _live(calls: Iterable[CallInfo]) -> list[CallInfo]:
    return [c for c in calls if not c.state.terminal]


def decide_offer(calls: Iterable[CallInfo], *, peer: str, call_id: bytes) -> OfferDecision:
    """What to do with an offer from ``peer`` for ``call_id``."""
    calls = list(calls)
    if len(call_id) != CALL_ID_BYTES:
        return Reject("malformed call id")
    if any(c.call_id == call_id for c in calls):
        return Reject("offer for a call id we already know")
    live = _live(calls)
    glare = [
        c for c in live if c.peer == peer and c.role is Role.CALLER and c.state in _GLARE_STATES
    ]
    if glare and len(live) == 1:
        ours = glare[0]
        return IgnoreOffer() if ours.call_id > call_id else LoseGlare(ours.call_id)
    return AnswerBusy() if live else Answer()


def route_message(
    calls: Iterable[CallInfo], *, peer: str, call_id: bytes, message: Message
) -> RouteDecision:
    """Where a message opened from ``peer``'s envelope for ``call_id`` goes."""
    calls = list(calls)
    if isinstance(message, Offer):
        return decide_offer(calls, peer=peer, call_id=call_id)
    for call in calls:
        if call.call_id == call_id:
            return Deliver() if call.peer == peer else Reject("call belongs to another peer")
    return Reject("unknown call id")


def decide_dial(calls: Iterable[CallInfo], *, peer: str) -> DialDecision:
    """Whether the user may dial ``peer`` now."""
    live = _live(calls)
    for call in live:
        if call.peer == peer and call.role is Role.CALLEE and call.state in _INCOMING:
            return AcceptInstead(call.call_id)
    return AlreadyInCall(live[0].call_id) if live else Dial()
