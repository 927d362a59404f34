"""Where an incoming envelope goes, decided purely: open, pinned key, freshness, route.

    inbound = Inbound(identity, contacts, replay)
    for action in inbound.receive(calls, from_user, body): ...   # the shell carries them out

Steps, in this order (each failure is a :class:`Drop` with a reason the phone counts):

1. open the envelope with our identity (``bad_envelope``) and decode its message;
2. check the sender key against the contact book for the user the server says sent it.
   Only an offer, the one message that can start a call, may pin a new contact's key (when it
   rings) or record another key as pending (a changed key, with where it came from); anything
   else from a stranger is dropped (``unsolicited``) and leaves no trace. A changed key never
   rings: the offer is refused (remembered, so a replay is refused too) and a :class:`Warn`
   goes to the user; a message for a live call with that user is dropped (whoever holds
   another key, the server say, cannot end the call). The pinned key keeps working even while
   another key is pending;
3. check freshness in the replay memory, in the pool the sender deserves: *solicited*
   contacts (dialed or verified) apart from everyone else, who share a small
   pool that evicts its oldest entry, so strangers can never crowd out the people we know or a
   genuine first contact (``bad_envelope``);
4. route it (:mod:`voice.call.routing`): to its call (:class:`Post`), as a new incoming call
   (:class:`StartCall`, which may replace our own call after glare), ``busy``
   (:class:`SendBusy`), or a drop. Garbage from the authenticated peer of a live call fails that
   call (:class:`Post` of ``BadMessage``). Only an envelope that is delivered, rings or is
   answered takes room in the replay memory; a new entry there gives :class:`SaveJournal`.

The contact book, the replay guard and (through it) the clock are parameters, as the server's
``Router`` takes its ``Registry``. Never logged: contents, keys.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from voice.call import events as ev
from voice.call import messages as m
from voice.call import routing
from voice.call.events import Role, State
from voice.crypto.callenvelope import call_key_id, is_call_envelope, key_id_of, open_call
from voice.crypto.contacts import ContactBook, KeySource, TrustState
from voice.crypto.envelope import EnvelopeHeader, open_envelope
from voice.crypto.identity import Identity, fingerprint_of
from voice.crypto.replay import Entry, ReplayGuard
from voice.errors import BadCallMessage, BadEnvelope, KeyChangedError

__all__ = [
    "CROSSING_GRACE",
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
    "identity_sealed_accepted",
]

log = logging.getLogger("voice.call")
MAX_REFUSED_OFFERS = 256  # offers refused for a changed key, remembered so a replay stays refused
MAX_OFFERS_SEEN = 65_536  # call ids of offers answered in the last max_age (16 bytes each)


CROSSING_GRACE = 5.0  # seconds after connecting during which a crossing cancel is taken


def identity_sealed_accepted(
    message: m.Message | None,
    *,
    state: State,
    peer_used_call_key: bool,
    connected_for: float | None,
) -> bool:
    """Whether a message of a live call may still come sealed with the peer's identity key.

    Never an ``accept``, ``ice``, ``hold`` or ``resume``: an honest peer sends them only once it
    has its keys, so it always seals them with the call's key. Nothing once the peer used its
    call key. In a connected call, only a ``cancel`` or ``error`` that crossed our ``accept``
    (the caller switches to the call's key when the accept arrives), for
    :data:`CROSSING_GRACE` seconds.
    Everything else is what a thief of the identity key could forge, and is refused (audit
    finding 10).
    """
    if isinstance(message, m.Accept | m.Ice | m.Hold | m.Resume) or peer_used_call_key:
        return False
    if state is not State.CONNECTED:
        return True
    crossing = isinstance(message, m.Cancel | m.CallError)
    return crossing and connected_for is not None and connected_for < CROSSING_GRACE


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
    open_key: bytes | None = field(default=None, repr=False)  # the peer's call-envelope key
    peer_used_call_key: bool = False  # a call-keyed envelope of the peer was accepted
    connected_for: float | None = None  # seconds since the call connected (None: not yet)


@dataclass(frozen=True)
class Drop:
    """Drop the delivery; ``reason`` is a counter name (``Phone.dropped``)."""

    reason: str


@dataclass(frozen=True)
class Post:
    """Feed ``event`` (a call message, or BadMessage) to the call ``call_id``."""

    call_id: bytes
    event: ev.Event
    call_keyed: bool = False  # it came sealed with the call's own key


@dataclass(frozen=True)
class StartCall:
    """A new incoming call. ``replaces``: our own call to this peer lost the glare (feed it
    GlareLost first); the user already asked for this call, so it is accepted at once."""

    call_id: bytes
    peer: str
    peer_key: bytes
    offer: m.Offer
    replaces: bytes | None = None
    private_ice: bool = False  # not a VERIFIED contact: our addresses only after accept


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

    entry: Entry


Action = Drop | Post | StartCall | SendBusy | Warn | SaveJournal


class Inbound:
    """The phone's inbound decisions. Keeps only the offers it refused for a changed key."""

    def __init__(self, identity: Identity, contacts: ContactBook, replay: ReplayGuard) -> None:
        self.identity = identity
        self.contacts = contacts
        self.replay = replay
        self._refused: dict[bytes, routing.CallInfo] = {}
        # Every offer answered (rang or busy) in the last max_age: a larger, cheaper memory than
        # the replay guard's unsolicited pool, which strangers can make evict an entry.
        self._offers: OrderedDict[bytes, float] = OrderedDict()

    @property
    def refused_offers(self) -> int:
        return len(self._refused)

    def receive(self, calls: Iterable[CallView], from_user: str, body: bytes) -> list[Action]:
        """Every action for one delivery, in the order to carry them out."""
        calls = list(calls)
        if is_call_envelope(body):
            return self._receive_call_keyed(calls, from_user, body)
        try:
            opened = open_envelope(self.identity, body)
        except BadEnvelope:
            log.debug("dropped an envelope that failed to open")
            return [Drop("bad_envelope")]
        peer, key, header = from_user, opened.sender_key, opened.header
        call_id = header.call_id
        message: m.Message | None
        try:
            message = m.decode(opened.payload)
        except BadCallMessage:
            message = None
        known = {c.call_id: c for c in calls}
        call = known.get(call_id)
        in_call = call is not None and call.peer == peer and call.peer_key == key
        if (
            in_call
            and call is not None
            and not identity_sealed_accepted(
                message,
                state=call.state,
                peer_used_call_key=call.peer_used_call_key,
                connected_for=call.connected_for,
            )
        ):
            # The peer seals this with the call's key by now: under the identity key it can
            # only come from a thief of that key (audit finding 10).
            return [Drop("identity_sealed")]
        contact = self.contacts.get(peer)
        solicited = in_call or (
            contact is not None and contact.public_key == key and contact.solicited
        )
        try:
            self.replay.check(key, header, record=False, solicited=solicited)
        except BadEnvelope:
            log.debug("dropped an envelope that was not fresh")
            return [Drop("bad_envelope")]
        if contact is not None and contact.public_key != key:
            return self._key_changed(peer, key, call_id, call, message)
        if message is None:
            if not in_call:
                return [Drop("bad_message")]
            return self._recorded(
                key, header, solicited, Drop("bad_message"), Post(call_id, ev.BadMessage())
            )
        if contact is None and not isinstance(message, m.Offer):
            log.debug("dropped a call message from a stranger")
            return [Drop("unsolicited")]
        if isinstance(message, m.Offer) and self._offer_seen(call_id):
            return [Drop("offer_for_a_call_id_we_already_know")]
        infos = [*self._refused.values()]
        infos += [routing.CallInfo(c.call_id, c.peer, c.role, c.state) for c in known.values()]
        route = routing.route_message(infos, peer=peer, call_id=call_id, message=message)
        if isinstance(route, routing.Deliver) and call is not None:
            if call.peer_key != key:
                return [Drop("wrong_key")]
            return self._recorded(key, header, solicited, Post(call_id, message))
        if isinstance(route, routing.Answer | routing.LoseGlare):
            assert isinstance(message, m.Offer)
            if contact is None:  # a first contact that rings: pin its key now
                try:
                    self.contacts.check(peer, key, source=KeySource.OFFER)
                except KeyChangedError:  # another process pinned another key meanwhile
                    return self._key_changed(peer, key, call_id, call, message)
            replaces = route.abandon if isinstance(route, routing.LoseGlare) else None
            private = contact is None or contact.state is not TrustState.VERIFIED
            start = StartCall(call_id, peer, key, message, replaces, private)
            return self._recorded(key, header, solicited, start)
        if isinstance(route, routing.AnswerBusy):
            return self._recorded(key, header, solicited, SendBusy(call_id, peer, key))
        reason = route.reason if isinstance(route, routing.Reject) else "refused call"
        log.debug("dropped a call message: %s", reason)
        return [Drop(reason.replace(" ", "_"))]

    def _offer_seen(self, call_id: bytes) -> bool:
        """Remember an offer's call id until no replay of it can pass the age check; True if it
        was seen already. Bounded: the oldest goes first (it expires first too)."""
        now = self.replay.now()
        while self._offers and next(iter(self._offers.values())) < now:
            self._offers.popitem(last=False)
        if call_id in self._offers:
            return True
        self._offers[call_id] = now + 2 * self.replay.max_age  # age limit plus future skew
        if len(self._offers) > MAX_OFFERS_SEEN:
            self._offers.popitem(last=False)
        return False

    def _receive_call_keyed(
        self, calls: list[CallView], from_user: str, body: bytes
    ) -> list[Action]:
        """An envelope sealed with a call's own key: only that call's peer can have sealed it."""
        kid = key_id_of(body)
        call = next(
            (c for c in calls if c.open_key is not None and call_key_id(c.open_key) == kid), None
        )
        if call is None or call.open_key is None or call.peer != from_user:
            return [Drop("bad_envelope")]
        try:
            header, payload = open_call(call.open_key, body)
            if header.call_id != call.call_id:
                raise BadEnvelope("bad envelope")
            self.replay.check(call.peer_key, header, record=False)
        except BadEnvelope:
            log.debug("dropped a call envelope that failed to open or was not fresh")
            return [Drop("bad_envelope")]
        # A call we placed, or one our user took: a caller has the call's keys while our
        # phone still rings (it derives them from its reveal), so keys alone prove nothing.
        live = call.role is Role.CALLER or call.state in (State.CONNECTING, State.CONNECTED)
        try:
            message: m.Message = m.decode(payload)
        except BadCallMessage:
            return self._recorded(
                call.peer_key,
                header,
                True,
                Drop("bad_message"),
                Post(call.call_id, ev.BadMessage()),
                live=live,
            )
        if isinstance(message, m.Offer):
            return [Drop("offer_in_a_call")]
        post = Post(call.call_id, message, True)
        return self._recorded(call.peer_key, header, True, post, live=live)

    def _recorded(
        self,
        key: bytes,
        header: EnvelopeHeader,
        solicited: bool,
        *actions: Action,
        live: bool = False,
    ) -> list[Action]:
        """Record the envelope in the replay memory, then the actions (journal first).
        ``live``: a call we placed or our user took, under the call's own keys: its memory
        moves out of eviction's reach (a ringing stranger's never does)."""
        try:
            new_call = self.replay.check(key, header, solicited=solicited, live=live)
        except BadEnvelope:  # it passed above; only a clock step in between can refuse it
            return [Drop("bad_envelope")]
        entry = self.replay.entry(key, header.call_id) if new_call else None
        return [*([SaveJournal(entry)] if entry is not None else []), *actions]

    def _key_changed(
        self,
        peer: str,
        key: bytes,
        call_id: bytes,
        call: CallView | None,
        message: m.Message | None,
    ) -> list[Action]:
        drop = Drop("key_changed")
        # A call with this peer keeps going: its peer key was pinned when it started and its
        # keys are bound to it, so this envelope is not from that peer. Dropping it (and
        # warning) keeps whoever holds another key, the server say, from ending the call.
        in_call_with_peer = call is not None and call.peer == peer
        if in_call_with_peer:
            contact = self.contacts.get(peer)
            old = contact.fingerprint.human if contact is not None else "?"
            new = fingerprint_of(key).human
            exc = KeyChangedError(peer, old, new, source="a message in a call")
        else:
            if not isinstance(message, m.Offer) or call_id in self._refused:
                return [drop]
            try:  # records the other key as pending, with where it came from
                self.contacts.check(peer, key, source=KeySource.OFFER)
            except KeyChangedError as changed:
                exc = changed
            else:  # cannot happen: the key differed from the pinned one
                return [drop]
            self._refused[call_id] = routing.CallInfo(call_id, peer, Role.CALLEE, State.FAILED)
            for old_id in list(self._refused)[: max(0, len(self._refused) - MAX_REFUSED_OFFERS)]:
                del self._refused[old_id]  # bounded: anyone can send offers under fresh keys
        warning = KeyChangedWarning(peer, exc.old_fingerprint, exc.new_fingerprint, str(exc))
        what = "dropped its message in a call" if in_call_with_peer else "refused its call"
        log.warning("the identity key of %s changed: %s", peer, what)
        return [drop, Warn(warning)]
