"""Where an incoming envelope goes, decided purely: open, freshness, pinned key, route.

    inbound = Inbound(identity, contacts, replay)
    for action in inbound.receive(calls, from_user, body): ...   # the shell carries them out

Steps, in this order (each failure is a :class:`Drop` with a reason the phone counts):

1. open the envelope with our identity (``bad_envelope``) and check freshness without
   recording it (``bad_envelope``);
2. check the sender key against the contact book for the user the server says sent it (pinned
   on first use). A changed key never rings: an offer is refused (remembered, so a replay is
   refused too) and a :class:`Warn` goes to the user; a message for a live call with that user
   is dropped (whoever holds another key, the server say, cannot end the call);
3. record the envelope in the replay memory (only under the pinned key: a sender sealing with
   a fresh key each time must not fill it). A new call in the memory gives :class:`SaveJournal`;
4. decode the message: garbage from the authenticated peer of a live call fails that call
   (:class:`Post` of ``BadMessage``); otherwise it is dropped;
5. route it (:mod:`voice.call.routing`): to its call (:class:`Post`), as a new incoming call
   (:class:`StartCall`, which may replace our own call after glare), ``busy``
   (:class:`SendBusy`), or a drop.

The contact book, the replay guard and (through it) the clock are parameters, as the server's
``Router`` takes its ``Registry``. Never logged: contents, keys.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from voice.call import events as ev
from voice.call import messages as m
from voice.call import routing
from voice.call.events import Role, State
from voice.crypto.contacts import ContactBook
from voice.crypto.envelope import open_envelope
from voice.crypto.identity import Identity
from voice.crypto.replay import ReplayGuard
from voice.errors import BadCallMessage, BadEnvelope, KeyChangedError

__all__ = [
    "MAX_REFUSED_OFFERS",
    "Action",
    "CallView",
    "Drop",
    "Inbound",
    "KeyChangedWarning",
    "Post",
    "SaveJournal",
    "SendBusy",
    "StartCall",
    "Warn",
]

log = logging.getLogger("voice.call")
MAX_REFUSED_OFFERS = 256  # offers refused for a changed key, remembered so a replay stays refused


@dataclass(frozen=True)
class KeyChangedWarning:
    """A contact called (or sent a call message) with another identity key than the pinned one.

    The call was refused and never rang. ``message`` says what to do (check the new fingerprint
    out of band, then ``voice trust USER FINGERPRINT``).
    """

    user: str
    old_fingerprint: str
    new_fingerprint: str
    message: str


@dataclass(frozen=True)
class CallView:
    """What the inbound decision needs to know of each call the phone remembers."""

    call_id: bytes
    peer: str
    peer_key: bytes
    role: Role
    state: State


@dataclass(frozen=True)
class Drop:
    """Drop the delivery; ``reason`` is a counter name (``Phone.dropped``)."""

    reason: str


@dataclass(frozen=True)
class Post:
    """Feed ``event`` (a call message, or BadMessage) to the call ``call_id``."""

    call_id: bytes
    event: ev.Event


@dataclass(frozen=True)
class StartCall:
    """A new incoming call. ``replaces``: our own call to this peer lost the glare (feed it
    GlareLost first); the user already asked for this call, so it is accepted at once."""

    call_id: bytes
    peer: str
    peer_key: bytes
    offer: m.Offer
    replaces: bytes | None = None


@dataclass(frozen=True)
class SendBusy:
    """Answer the offer with ``busy`` on its call id; no call is made."""

    call_id: bytes
    peer: str
    peer_key: bytes


@dataclass(frozen=True)
class Warn:
    warning: KeyChangedWarning


@dataclass(frozen=True)
class SaveJournal:
    """The replay memory learned a new call: write it down, so a restart does not reopen it."""


Action = Drop | Post | StartCall | SendBusy | Warn | SaveJournal


class Inbound:
    """The phone's inbound decisions. Keeps only the offers it refused for a changed key."""

    def __init__(self, identity: Identity, contacts: ContactBook, replay: ReplayGuard) -> None:
        self.identity = identity
        self.contacts = contacts
        self.replay = replay
        self._refused: dict[bytes, routing.CallInfo] = {}

    @property
    def refused_offers(self) -> int:
        return len(self._refused)

    def receive(self, calls: Iterable[CallView], from_user: str, body: bytes) -> list[Action]:
        """Every action for one delivery, in the order to carry them out."""
        try:
            opened = open_envelope(self.identity, body)
            self.replay.check(opened.sender_key, opened.header, record=False)
        except BadEnvelope:
            log.debug("dropped an envelope that failed to open or was not fresh")
            return [Drop("bad_envelope")]
        peer, key, call_id = from_user, opened.sender_key, opened.header.call_id
        message: m.Message | None
        try:
            message = m.decode(opened.payload)
        except BadCallMessage:
            message = None
        known = {c.call_id: c for c in calls}
        call = known.get(call_id)
        try:
            self.contacts.check(peer, key)
        except KeyChangedError as exc:
            return self._key_changed(peer, call_id, call, message, exc)
        try:
            new_call = self.replay.check(key, opened.header)
        except BadEnvelope:  # it passed above; only a clock step in between can refuse it
            return [Drop("bad_envelope")]
        actions: list[Action] = [SaveJournal()] if new_call else []
        if message is None:
            actions.append(Drop("bad_message"))
            if call is not None and call.peer == peer and call.peer_key == key:
                actions.append(Post(call_id, ev.BadMessage()))
            return actions
        infos = [*self._refused.values()]
        infos += [routing.CallInfo(c.call_id, c.peer, c.role, c.state) for c in known.values()]
        route = routing.route_message(infos, peer=peer, call_id=call_id, message=message)
        if isinstance(route, routing.Deliver) and call is not None:
            actions.append(Post(call_id, message) if call.peer_key == key else Drop("wrong_key"))
        elif isinstance(route, routing.Answer | routing.LoseGlare):
            assert isinstance(message, m.Offer)
            replaces = route.abandon if isinstance(route, routing.LoseGlare) else None
            actions.append(StartCall(call_id, peer, key, message, replaces))
        elif isinstance(route, routing.AnswerBusy):
            actions.append(SendBusy(call_id, peer, key))
        else:
            reason = route.reason if isinstance(route, routing.Reject) else type(route).__name__
            log.debug("dropped a call message: %s", reason)
            actions.append(Drop(reason.replace(" ", "_")))
        return actions

    def _key_changed(
        self,
        peer: str,
        call_id: bytes,
        call: CallView | None,
        message: m.Message | None,
        exc: KeyChangedError,
    ) -> list[Action]:
        drop = Drop("key_changed")
        # A call with this peer keeps going: its peer key was pinned when it started and its
        # keys are bound to it, so this envelope is not from that peer. Dropping it (and
        # warning) keeps whoever holds another key, the server say, from ending the call.
        in_call_with_peer = call is not None and call.peer == peer
        if not in_call_with_peer:
            if not isinstance(message, m.Offer) or call_id in self._refused:
                return [drop]
            self._refused[call_id] = routing.CallInfo(call_id, peer, Role.CALLEE, State.FAILED)
            for old in list(self._refused)[: max(0, len(self._refused) - MAX_REFUSED_OFFERS)]:
                del self._refused[old]  # bounded: anyone can send offers under fresh keys
        warning = KeyChangedWarning(peer, exc.old_fingerprint, exc.new_fingerprint, str(exc))
        what = "dropped its message in a call" if in_call_with_peer else "refused its call"
        log.warning("the identity key of %s changed: %s", peer, what)
        return [drop, Warn(warning)]
