"""Group control messages over the signaling server: sealed, pinned, fresh, or dropped.

Every group message (voice.group.messages) travels as one sealed envelope
(voice.crypto.envelope) whose ``call_id`` is the 16-byte group id, ``seq`` counts up per sender
and ``timestamp_ms`` comes from the injected clock. An incoming delivery is opened with our
identity, checked for freshness (ReplayGuard), its sender's key checked against the contact book
(a key other than the pinned one is refused: CHANGED), then decoded. Whatever fails is dropped
and counted in ``dropped`` by reason: nothing from the network raises into the caller's loop.

Peer keys for sealing come from the contact book, or, for a user not pinned yet, from the
server's key directory, pinned on first use (as a 1:1 call does); the group security code is
what catches a key the server substituted. Never logged: keys, payloads.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from voice.crypto.contacts import ContactBook
from voice.crypto.contactstore import KeySource
from voice.crypto.envelope import EnvelopeHeader, open_envelope, seal
from voice.crypto.identity import Identity
from voice.crypto.replay import ReplayGuard
from voice.errors import BadEnvelope, BadGroupMessage, BadPublicKey, KeyChangedError
from voice.group import messages as gm
from voice.net.client import Delivery, SignalingClient

__all__ = ["GroupControl", "GroupOpener", "Incoming"]

SEQ_PER_MS = 1024  # room for that many messages per millisecond of a session's start


@dataclass(frozen=True)
class Incoming:
    """One opened, fresh, decoded message; ``pinned``: its key was pinned before it came."""

    sender: str
    identity_key: bytes
    message: gm.Message
    pinned: bool


class GroupControl:
    """Seal group messages to members and open theirs, for one user on one signaling session."""

    def __init__(
        self,
        client: SignalingClient,
        identity: Identity,
        contacts: ContactBook,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.identity = identity
        self.contacts = contacts
        self.clock = clock
        self.opener = GroupOpener(identity, contacts, clock=clock)
        self.dropped = self.opener.dropped  # one counter: opening's refusals and key changes
        # Sequence numbers start from the clock (ms x 1024), not 1: a member that leaves and
        # joins the same group again from a new process (same group id, same identity) must not
        # look like a replay of its earlier session to members who remember it.
        self._seq = itertools.count(int(clock() * 1000) * SEQ_PER_MS)

    @property
    def user(self) -> str:
        return self.client.user

    async def peer_key(self, user: str) -> bytes:
        """``user``'s pinned key; looked up and pinned on first use. KeyChangedError if the
        server now names another key than the pinned one."""
        contact = self.contacts.get(user)
        if contact is not None:
            if contact.pending_key is not None:
                self.contacts.check(user, contact.pending_key)  # raises KeyChangedError
            return contact.public_key
        key = await self.client.lookup(user)
        return self.contacts.check(user, key, source=KeySource.LOOKUP).public_key

    def pin(self, user: str, key: bytes) -> bool:
        """Pin ``key`` for ``user`` on first use (a roster names it); False if another key is
        pinned (the member is refused: CHANGED) or ``key`` is no public key."""
        try:
            self.contacts.check(user, key, source=KeySource.LOOKUP)
        except KeyChangedError:
            self.dropped["key_changed"] += 1
            return False
        except BadPublicKey:  # no key at all: nobody could seal to it, nothing is pinned
            self.dropped["bad_key"] += 1
            return False
        return True

    async def send(self, to: str, message: gm.Message) -> None:
        """Seal ``message`` to ``to`` and hand it to the server. Raises what the client raises
        (RecipientOffline...) and KeyChangedError for a changed key."""
        header = EnvelopeHeader(message.group, next(self._seq), int(self.clock() * 1000))
        body = seal(self.identity, await self.peer_key(to), header, gm.encode(message))
        await self.client.send(to, body)

    def open(self, delivery: Delivery) -> Incoming | None:
        """The message in ``delivery``, or None (counted) if it is not one we may accept."""
        return self.opener.open(delivery.from_user, delivery.body)


class GroupOpener:
    """Opens, checks and decodes group deliveries for one identity: pure, no I/O.

    Freshness memory is spent only on envelopes that opened and whose sender key is the pinned
    one. A sender we have not pinned (an invite from a stranger) goes to the replay guard's
    small unsolicited pool, which evicts its own oldest entries: however many accounts a
    stranger makes, the memory of our contacts' and members' messages is never crowded out
    (voice.crypto.replay)."""

    def __init__(
        self,
        identity: Identity,
        contacts: ContactBook,
        *,
        clock: Callable[[], float] = time.time,
        guard: ReplayGuard | None = None,
    ) -> None:
        self.identity = identity
        self.contacts = contacts
        self.guard = ReplayGuard(clock=clock) if guard is None else guard
        self.dropped: Counter[str] = Counter()

    def open(self, from_user: str, body: bytes) -> Incoming | None:
        """The message ``from_user`` sent in ``body``, or None (counted by reason)."""
        try:
            opened = open_envelope(self.identity, body)
        except BadEnvelope:
            self.dropped["bad_envelope"] += 1
            return None
        contact = self.contacts.get(from_user)
        if contact is not None and contact.public_key != opened.sender_key:
            self.dropped["key_changed"] += 1
            return None
        try:
            self.guard.check(opened.sender_key, opened.header, solicited=contact is not None)
        except BadEnvelope:
            self.dropped["replay"] += 1
            return None
        try:
            message = gm.decode(opened.payload)
        except BadGroupMessage:
            self.dropped["bad_message"] += 1
            return None
        if message.group != opened.header.call_id:
            self.dropped["call_id_mismatch"] += 1
            return None
        return Incoming(from_user, opened.sender_key, message, contact is not None)
