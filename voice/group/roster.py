"""Group membership, pure: the creator's roster authority and one member's view of it.

Inputs are messages already opened from a sealed envelope (:meth:`receive` takes the sender's
username and the identity key the envelope was sealed with) and local events (the user, the
session layer, :meth:`tick` with the time). Each returns a :class:`Step`: effects for the session
to carry out, in order. No I/O, no clock, no randomness: frame keys and times come in. Network
input never raises: whatever is refused is counted in ``dropped`` by reason and changes nothing.

Who may send what (docs/group-calls.md): ``invite``, ``roster``, ``removed``, ``end`` (and a
``decline`` that refuses a join) only the creator, sealed with the creator's key; ``join``,
``decline`` and ``leave`` only to the creator; ``sender_key``, ``commit`` and ``reveal`` only a
member of the current roster, under the index the roster gives it and sealed with the identity key
it lists. A member holds those of a later epoch (its roster may still be on the way) and delivers
them once it accepts that roster. Older epochs are dropped (``stale_epoch``), except a sender key
of an epoch whose sender is still the same member and since which nobody left: the key layer
ratchets it forward, as its sender did (two joins close together make that common).

CreatorState (the creator is member index 0; epoch 0 is the creator alone, nothing is sent):

| state | input                          | effects                                       | next  |
|-------|--------------------------------|-----------------------------------------------|-------|
| OPEN  | invite(user)                   | Send invite                                   | OPEN  |
| OPEN  | join from an invitee           | epoch+1; Send roster to the others;           | OPEN  |
|       |                                | MembershipChanged (joined)                    |       |
| OPEN  | join, group full (8)           | Send decline; InviteClosed("full")            | OPEN  |
| OPEN  | decline from an invitee        | InviteClosed("declined")                      | OPEN  |
| OPEN  | remove(user)                   | epoch+1; Send removed to it, roster to the    | OPEN  |
|       |                                | rest; MembershipChanged (left)                |       |
| OPEN  | leave / member_gone(user)      | as remove, without ``removed``                | OPEN  |
| OPEN  | sender_key / commit / reveal   | Deliver(member, message)                      | OPEN  |
| OPEN  | tick past an invite's deadline | Send end to it; InviteClosed("expired")       | OPEN  |
| OPEN  | end()                          | Send end to everyone; Ended("ended_local")    | ENDED |

MemberState:

| state           | input                          | effects                             | next    |
|-----------------|--------------------------------|-------------------------------------|---------|
| IDLE            | invite from a pinned contact   | AskUser(invite)                     | INVITED |
| INVITED         | accept(frame_key)              | Send join                           | JOINING |
| INVITED         | decline()                      | Send decline; Ended("declined")     | ENDED   |
| JOINING, JOINED | roster(e > last, naming us)    | JoinRoom (first or moved);          | JOINED  |
|                 |                                | MembershipChanged; held messages    |         |
| JOINED          | sender_key / commit / reveal   | Deliver(member, message)            | JOINED  |
| JOINING         | decline from the creator       | Ended("refused")                    | ENDED   |
| JOINING         | tick past join_timeout         | Send leave; Ended("no_roster")      | ENDED   |
| JOINING, JOINED | removed(e > last)              | Ended("removed")                    | ENDED   |
| JOINING, JOINED | leave()                        | Send leave; Ended("left")           | ENDED   |
| any but ENDED   | end / creator_gone()           | Ended("ended" / "creator_gone")     | ENDED   |

Member indexes: the creator is 0; a joiner gets the lowest index never given in this group call,
so a member who left can never be confused with a newcomer under the same KID (its keys may
still be held for the grace period). Never logged: keys, nonces.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from typing import Final

from voice.group import messages as gm
from voice.group.messages import Member

__all__ = [
    "AskUser",
    "CreatorState",
    "Deliver",
    "Effect",
    "EndReason",
    "Ended",
    "InviteClosed",
    "JoinRoom",
    "MemberState",
    "MembershipChanged",
    "Send",
    "State",
    "Step",
]

INVITE_TIMEOUT: Final = 120.0  # an unanswered invite lapses (the invitee is told: ``end``)
JOIN_TIMEOUT: Final = 30.0  # a joiner that gets no roster gives up
MAX_HELD: Final = 64  # messages of a later epoch a member keeps until that roster comes
MAX_REFUSED_SHOWN: Final = 8  # strangers' invites a member remembers, to tell its user who
EPOCHS_KEPT: Final = 64  # how far back an old epoch's sender key may still be carried forward


class State(enum.Enum):
    IDLE = "idle"
    INVITED = "invited"
    JOINING = "joining"
    JOINED = "joined"
    OPEN = "open"  # the creator's group
    ENDED = "ended"


class EndReason(enum.StrEnum):
    ENDED_LOCAL = "ended_local"  # the creator ended the group call
    ENDED = "ended"  # the creator ended it (or withdrew our invite)
    REMOVED = "removed"
    REFUSED = "refused"  # the creator refused our join (the group is full)
    DECLINED = "declined"  # our user declined the invite
    LEFT = "left"
    CREATOR_GONE = "creator_gone"
    NO_ROSTER = "no_roster"


PeerMessage = gm.SenderKey | gm.Commit | gm.Reveal


# ---- effects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Seal ``message`` to ``to`` and send it through the signaling server."""

    to: str
    message: gm.Message


@dataclass(frozen=True)
class AskUser:
    """A pinned contact invites us: ask our user, then call accept() or decline()."""

    invite: gm.Invite


@dataclass(frozen=True)
class JoinRoom:
    """Enter (or move to) this SFU room: the roster says where the group's media is."""

    sfu_url: str
    room: int
    pin: str


@dataclass(frozen=True)
class MembershipChanged:
    """The key layer's cue: ``epoch`` has ``members``; ratchet for ``joined``, new generation
    for ``left``. A member's first roster reports every member as joined."""

    epoch: int
    members: tuple[Member, ...]
    joined: tuple[Member, ...]
    left: tuple[Member, ...]


@dataclass(frozen=True)
class Deliver:
    """A sender key, commit or reveal from ``member``, for the current epoch, checked."""

    member: Member
    message: PeerMessage


@dataclass(frozen=True)
class InviteClosed:
    """The creator's invite to ``user`` ended without a join: declined, expired, gone, full,
    withdrawn or no member index left."""

    user: str
    reason: str


@dataclass(frozen=True)
class Ended:
    """This side's group call is over: leave the room, erase the keys."""

    reason: EndReason


Effect = Send | AskUser | JoinRoom | MembershipChanged | Deliver | InviteClosed | Ended


@dataclass(frozen=True)
class Step:
    """What one input did: effects in order, or why it was refused (then nothing changed)."""

    effects: tuple[Effect, ...] = ()
    refused: str | None = None


# ---- shared --------------------------------------------------------------------------------


def _diff(
    old: tuple[Member, ...], new: tuple[Member, ...]
) -> tuple[tuple[Member, ...], tuple[Member, ...]]:
    """(joined, left): an entry whose key or index changed counts as left and joined again."""
    return tuple(m for m in new if m not in old), tuple(m for m in old if m not in new)


class _Party:
    """What creator and member share: the current epoch and roster, and the drop counter."""

    def __init__(self, user: str, identity_key: bytes) -> None:
        self.user: Final = user
        self.identity_key: Final = bytes(identity_key)
        self.state = State.IDLE
        self.group: bytes | None = None
        self.epoch = 0
        self.members: tuple[Member, ...] = ()
        self.dropped: Counter[str] = Counter()
        # epoch -> (its members, whether it dropped anyone): which old sender keys still hold
        self._epochs: dict[int, tuple[tuple[Member, ...], bool]] = {}

    def member(self, user: str) -> Member | None:
        return next((m for m in self.members if m.user == user), None)

    def _drop(self, reason: str) -> Step:
        self.dropped[reason] += 1
        return Step((), reason)

    def _remember_epoch(self, members: tuple[Member, ...], *, dropped_someone: bool) -> None:
        self._epochs[self.epoch] = (members, dropped_someone)
        for old in [e for e in self._epochs if e < self.epoch - EPOCHS_KEPT]:
            del self._epochs[old]

    def _carried(self, sender: str, msg: PeerMessage) -> bool:
        """Whether ``msg``, from an earlier epoch, is a sender key that still holds: its sender
        was the same member then, and every epoch since only added members (the key layer
        ratchets it forward, as its sender did). Two joins close together make this common: a
        newcomer's key for one epoch can arrive after the next epoch's roster."""
        member = self.member(sender)
        then = self._epochs.get(msg.epoch)
        if not isinstance(msg, gm.SenderKey) or member is None or then is None:
            return False
        if member not in then[0]:
            return False
        since = range(msg.epoch + 1, self.epoch + 1)
        return all(e in self._epochs and not self._epochs[e][1] for e in since)

    def _check_peer(self, sender: str, identity_key: bytes, msg: PeerMessage) -> Step:
        """Deliver ``msg`` for the current epoch (or an earlier epoch's sender key that still
        holds) if ``sender`` is the member it claims to be."""
        if msg.epoch < self.epoch and not self._carried(sender, msg):
            return self._drop("stale_epoch")
        if msg.epoch > self.epoch:
            return self._drop("future_epoch")
        if sender == self.user:
            return self._drop("from_self")
        member = self.member(sender)
        if member is None:
            return self._drop("not_member")
        if member.index != msg.index:
            return self._drop("wrong_index")
        if member.identity_key != identity_key:
            return self._drop("wrong_identity_key")
        return Step((Deliver(member, msg),))


# ---- the creator ---------------------------------------------------------------------------


class CreatorState(_Party):
    """The roster authority of one group call; a member too (index 0)."""

    def __init__(
        self,
        *,
        user: str,
        identity_key: bytes,
        frame_key: bytes,
        group: bytes,
        sfu_url: str,
        room: int,
        pin: str,
        invite_timeout: float = INVITE_TIMEOUT,
        max_members: int = gm.MAX_MEMBERS,
    ) -> None:
        """Open the group (epoch 0: the creator alone). Raises BadGroupMessage on bad values."""
        super().__init__(user, identity_key)
        gm.Invite(group, user, sfu_url, room, pin)  # the same checks the invitees make
        if not 1 <= max_members <= gm.MAX_MEMBERS:
            raise ValueError(f"max_members must be 1..{gm.MAX_MEMBERS}")
        self.state = State.OPEN
        self.group = bytes(group)
        self.sfu_url, self.room, self.pin = sfu_url, room, pin
        self.invite_timeout = invite_timeout
        self.max_members = max_members
        self.members = (Member(user, self.identity_key, 0, frame_key),)
        self._remember_epoch(self.members, dropped_someone=False)
        self.invited: dict[str, float] = {}  # user -> deadline
        self._joined_at: dict[str, int] = {}  # user -> the epoch that admitted it
        self._next_index = 1

    # ---- local events ----

    def invite(self, now: float, user: str) -> Step:
        """Invite ``user`` (a pinned contact; the session checks that). Again: sent again."""
        if self.state is not State.OPEN:
            return Step((), "ended")
        if user == self.user or self.member(user) is not None:
            return Step((), "already_member")
        if not gm.USERNAME.fullmatch(user):
            return Step((), "bad_username")
        self.invited[user] = now + self.invite_timeout
        assert self.group is not None
        return Step(
            (Send(user, gm.Invite(self.group, self.user, self.sfu_url, self.room, self.pin)),)
        )

    def remove(self, now: float, user: str) -> Step:
        """Remove a member (it gets ``removed``), or withdraw an invite (it gets ``end``)."""
        if self.state is not State.OPEN:
            return Step((), "ended")
        if user in self.invited:
            del self.invited[user]
            return Step((self._send_end(user), InviteClosed(user, "withdrawn")))
        if user == self.user or self.member(user) is None:
            return Step((), "not_member")
        return self._without(user, tell=True)

    def member_gone(self, now: float, user: str) -> Step:
        """The session lost ``user`` (offline, sends refused): a leave, or a lapsed invite."""
        if self.state is not State.OPEN:
            return Step((), "ended")
        if user in self.invited:
            del self.invited[user]
            return Step((InviteClosed(user, "gone"),))
        if user == self.user or self.member(user) is None:
            return Step((), "not_member")
        return self._without(user, tell=False)

    def end(self, now: float) -> Step:
        """End the group call for everyone (members and invitees)."""
        if self.state is not State.OPEN:
            return Step((), "ended")
        others = [m.user for m in self.members if m.user != self.user] + sorted(self.invited)
        self.invited.clear()
        self.state = State.ENDED
        return Step((*(self._send_end(u) for u in others), Ended(EndReason.ENDED_LOCAL)))

    def tick(self, now: float) -> Step:
        """Let unanswered invites lapse (the invitee is told, so its screen stops asking)."""
        if self.state is not State.OPEN:
            return Step()
        lapsed = sorted(u for u, deadline in self.invited.items() if now >= deadline)
        effects: list[Effect] = []
        for user in lapsed:
            del self.invited[user]
            effects += [self._send_end(user), InviteClosed(user, "expired")]
        return Step(tuple(effects))

    # ---- messages ----

    def receive(self, now: float, sender: str, identity_key: bytes, message: gm.Message) -> Step:
        """A message from ``sender``, opened from an envelope sealed with ``identity_key``
        (the session checked it against the contact book)."""
        if message.group != self.group:
            return self._drop("other_group")
        if self.state is not State.OPEN:
            return self._drop("ended")
        if isinstance(message, (gm.Invite, gm.Roster, gm.Removed, gm.End)):
            return self._drop("creator_only")
        if isinstance(message, gm.Join):
            return self._on_join(sender, identity_key, message)
        if isinstance(message, gm.Decline):
            if sender not in self.invited:
                return self._drop("not_invited")
            del self.invited[sender]
            return Step((InviteClosed(sender, "declined"),))
        if isinstance(message, gm.Leave):
            return self._on_leave(sender, identity_key, message)
        return self._check_peer(sender, identity_key, message)

    def _on_join(self, sender: str, identity_key: bytes, message: gm.Join) -> Step:
        if sender not in self.invited:
            return self._drop("already_member" if self.member(sender) else "not_invited")
        if any(m.frame_key == message.frame_key for m in self.members):
            return self._drop("duplicate_frame_key")
        del self.invited[sender]
        if len(self.members) >= self.max_members or self._next_index > gm.MAX_INDEX:
            reason = "full" if len(self.members) >= self.max_members else "no_index"
            assert self.group is not None
            return Step((Send(sender, gm.Decline(self.group)), InviteClosed(sender, reason)))
        entry = Member(sender, bytes(identity_key), self._next_index, message.frame_key)
        self._next_index += 1
        members = tuple(sorted((*self.members, entry), key=lambda m: m.index))
        self._joined_at[sender] = self.epoch + 1
        return self._new_epoch(members)

    def _on_leave(self, sender: str, identity_key: bytes, message: gm.Leave) -> Step:
        member = self.member(sender)
        if member is None or sender == self.user:
            return self._drop("not_member")
        if member.identity_key != identity_key:
            return self._drop("wrong_identity_key")
        if message.epoch > self.epoch:
            return self._drop("future_epoch")
        if message.epoch and message.epoch < self._joined_at[sender]:
            return self._drop("stale_epoch")  # a leave from an earlier time in the group
        return self._without(sender, tell=False)

    def _without(self, user: str, *, tell: bool) -> Step:
        members = tuple(m for m in self.members if m.user != user)
        del self._joined_at[user]
        first: tuple[Effect, ...] = ()
        if tell:
            assert self.group is not None
            first = (Send(user, gm.Removed(self.group, self.epoch + 1)),)
        step = self._new_epoch(members)
        return Step(first + step.effects)

    def _new_epoch(self, members: tuple[Member, ...]) -> Step:
        """Bump the epoch to ``members``: roster to every other member, then the key layer."""
        assert self.group is not None
        joined, left = _diff(self.members, members)
        self.epoch += 1
        self.members = members
        self._remember_epoch(members, dropped_someone=bool(left))
        roster = gm.Roster(self.group, self.epoch, members, self.sfu_url, self.room, self.pin)
        sends = tuple(Send(m.user, roster) for m in members if m.user != self.user)
        return Step((*sends, MembershipChanged(self.epoch, members, joined, left)))

    def _send_end(self, user: str) -> Send:
        assert self.group is not None
        return Send(user, gm.End(self.group))


# ---- a member ------------------------------------------------------------------------------


class MemberState(_Party):
    """One invitee's or member's view of one group call, from invite to its end."""

    def __init__(
        self,
        *,
        user: str,
        identity_key: bytes,
        join_timeout: float = JOIN_TIMEOUT,
        max_held: int = MAX_HELD,
    ) -> None:
        super().__init__(user, identity_key)
        self.join_timeout = join_timeout
        self.max_held = max_held
        self.creator: str | None = None
        self.creator_key: bytes | None = None
        self.invite: gm.Invite | None = None
        self.frame_key: bytes | None = None
        self.room: JoinRoom | None = None
        self.reason: EndReason | None = None
        self.deadline: float | None = None
        self._held: list[tuple[str, bytes, PeerMessage]] = []
        self.refused_invites: tuple[str, ...] = ()  # the latest senders refused: not contacts

    # ---- local events ----

    def accept(self, now: float, frame_key: bytes) -> Step:
        """Our user accepts the invite; ``frame_key`` is our fresh frame signing public key."""
        if self.state is not State.INVITED:
            return Step((), "not_invited")
        assert self.group is not None and self.creator is not None
        join = gm.Join(self.group, bytes(frame_key))  # BadGroupMessage on a bad key (local bug)
        self.frame_key = join.frame_key
        self.state = State.JOINING
        self.deadline = now + self.join_timeout
        return Step((Send(self.creator, join),))

    def decline(self, now: float) -> Step:
        """Our user declines the invite."""
        if self.state is not State.INVITED:
            return Step((), "not_invited")
        assert self.group is not None and self.creator is not None
        return self._end(EndReason.DECLINED, Send(self.creator, gm.Decline(self.group)))

    def leave(self, now: float) -> Step:
        """Our user hangs up."""
        if self.state not in (State.JOINING, State.JOINED):
            return Step((), "not_joined")
        return self._end(EndReason.LEFT, self._leave_message())

    def creator_gone(self, now: float) -> Step:
        """The session lost the creator (offline, sends refused): nobody keeps the roster."""
        if self.state in (State.IDLE, State.ENDED):
            return Step((), "no_group")
        return self._end(EndReason.CREATOR_GONE)

    def tick(self, now: float) -> Step:
        """Give up a join that no roster answered."""
        if self.state is State.JOINING and self.deadline is not None and now >= self.deadline:
            return self._end(EndReason.NO_ROSTER, self._leave_message())
        return Step()

    # ---- messages ----

    def receive(
        self,
        now: float,
        sender: str,
        identity_key: bytes,
        message: gm.Message,
        *,
        pinned: bool = False,
    ) -> Step:
        """A message from ``sender``, opened from an envelope sealed with ``identity_key``.
        ``pinned``: the session found that key pinned for ``sender`` before this envelope (an
        invite from anyone else is refused)."""
        if self.state is State.ENDED:
            return self._drop("ended")
        if self.state is State.IDLE:
            if not isinstance(message, gm.Invite):
                return self._drop("no_group")
            return self._on_invite(sender, identity_key, message, pinned)
        if message.group != self.group:
            return self._drop("other_group")
        if isinstance(message, (gm.Join, gm.Leave)):
            return self._drop("not_creator")
        if isinstance(message, (gm.Invite, gm.Roster, gm.Removed, gm.End, gm.Decline)):
            if sender != self.creator or identity_key != self.creator_key:
                return self._drop("creator_only")
            return self._from_creator(message)
        return self._on_peer(sender, identity_key, message)

    def _on_invite(self, sender: str, identity_key: bytes, invite: gm.Invite, pinned: bool) -> Step:
        if not pinned:  # the app may say who (bounded: strangers must not grow our memory)
            if sender not in self.refused_invites:
                self.refused_invites = (*self.refused_invites, sender)[-MAX_REFUSED_SHOWN:]
            return self._drop("not_pinned")
        if invite.creator != sender:
            return self._drop("creator_mismatch")
        self.state = State.INVITED
        self.group, self.invite = invite.group, invite
        self.creator, self.creator_key = sender, bytes(identity_key)
        return Step((AskUser(invite),))

    def _from_creator(self, message: gm.Message) -> Step:
        if isinstance(message, gm.End):
            return self._end(EndReason.ENDED)
        if isinstance(message, gm.Invite):
            return self._drop("duplicate_invite")
        if self.state is State.INVITED:
            return self._drop("not_joined")
        if isinstance(message, gm.Decline):
            if self.state is not State.JOINING:
                return self._drop("unexpected_decline")
            return self._end(EndReason.REFUSED)
        if isinstance(message, gm.Removed):
            if message.epoch <= self.epoch:
                return self._drop("stale_epoch")
            return self._end(EndReason.REMOVED)
        assert isinstance(message, gm.Roster)
        return self._on_roster(message)

    def _on_roster(self, roster: gm.Roster) -> Step:
        if roster.epoch <= self.epoch:
            return self._drop("stale_epoch")
        me = roster.member(self.user)
        if me is None:
            return self._drop("not_in_roster")
        if me.identity_key != self.identity_key or me.frame_key != self.frame_key:
            return self._drop("wrong_own_entry")
        creator = roster.member(self.creator or "")
        if creator is None or creator.identity_key != self.creator_key:
            return self._drop("creator_not_in_roster")
        joined, left = _diff(self.members, roster.members)
        effects: list[Effect] = []
        room = JoinRoom(roster.sfu_url, roster.room, roster.pin)
        if room != self.room:
            effects.append(room)
            self.room = room
        self.state, self.deadline = State.JOINED, None
        self.epoch, self.members = roster.epoch, roster.members
        # A roster that skips an epoch (one that never came) leaves that epoch unknown here:
        # no key from before the gap is carried over it.
        self._remember_epoch(roster.members, dropped_someone=bool(left))
        effects.append(MembershipChanged(roster.epoch, roster.members, joined, left))
        held, self._held = self._held, []
        for sender, key, message in held:  # in the order they came
            if message.epoch > self.epoch:
                self._held.append((sender, key, message))
            else:
                effects += self._check_peer(sender, key, message).effects
        return Step(tuple(effects))

    def _on_peer(self, sender: str, identity_key: bytes, message: PeerMessage) -> Step:
        if message.epoch > self.epoch and self.state in (State.JOINING, State.JOINED):
            if len(self._held) >= self.max_held:
                return self._drop("held_full")
            self._held.append((sender, bytes(identity_key), message))
            return Step()  # not refused: it waits for its roster
        if self.state is not State.JOINED:
            return self._drop("not_joined")
        return self._check_peer(sender, identity_key, message)

    def _leave_message(self) -> Send:
        assert self.group is not None and self.creator is not None
        return Send(self.creator, gm.Leave(self.group, self.epoch))

    def _end(self, reason: EndReason, *first: Effect) -> Step:
        self.state, self.reason, self.deadline = State.ENDED, reason, None
        self._held.clear()
        return Step((*first, Ended(reason)))
