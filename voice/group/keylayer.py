"""The key layer of one member, pure: sender keys and the group code, epoch by epoch.

It turns the roster's cues into the messages the design asks for (docs/group-calls.md) and
returns them as ``(recipient, message)`` pairs for the session to seal and send, in order:

- a new epoch that adds members: our key ratchets one step, so does every key held, and ours
  goes to the newcomers only; a newcomer (our first roster) sends its fresh key to everyone;
  a key of an earlier epoch that arrives late (two joins close together; the roster checked
  that nobody left since) is ratcheted forward to this epoch as its sender's was;
- a new epoch that drops members: their keys are forgotten at once, and a fresh key of the
  next generation goes to every remaining member;
- then a commit to every other member; our reveal once every commit is in *and* every member's
  sender key of this epoch is held. The code binds each key by its commitment, as the keys
  stood when we revealed: a key that changes after that fails the round. So every input of the
  code is fixed before our nonce is known, as the commits fix the nonces: a member (or a
  server that substitutes keys) that could still pick its key after seeing the reveals could
  try keys until two different transcripts gave the same code (2**24 tries: seconds).

Keys sent before commits on the same path: a member whose commit arrived already holds our
key. No I/O, no clock (``now`` comes in). Never logged: keys, nonces, the code.
"""

from __future__ import annotations

from collections import Counter

from voice.crypto.sas import Sas
from voice.errors import GroupCodeError, StaleSenderKey
from voice.group import messages as gm
from voice.group.code import CodeMember, CodeRound
from voice.group.keys import OwnSender, PeerKeys, SenderKey

__all__ = ["KeyLayer", "Outgoing"]

Outgoing = list[tuple[str, gm.Message]]


class KeyLayer:
    """Our sender, the keys of the others, and this epoch's code round."""

    def __init__(self, user: str, *, sender: OwnSender | None = None) -> None:
        self.user = user
        self.sender = sender  # None until our first roster (the creator has one from the start)
        self.peers = PeerKeys()
        self.round: CodeRound | None = None
        self.code: Sas | None = None
        self.failure: str | None = None
        self.dropped: Counter[str] = Counter()
        self._members: tuple[gm.Member, ...] = ()
        self._others: list[str] = []  # whom we send to this epoch
        self._group = b""
        self._key_epoch: dict[int, int] = {}  # member index -> the epoch its held key is for
        self._revealed: set[int] = set()  # epochs whose nonce we sent
        self._fixed: dict[int, bytes] = {}  # member index -> its key's commitment at our reveal

    def on_membership(
        self,
        group: bytes,
        epoch: int,
        members: tuple[gm.Member, ...],
        others: list[gm.Member],
        joined: tuple[gm.Member, ...],
        left: tuple[gm.Member, ...],
        now: float,
    ) -> Outgoing:
        """A new epoch of ``members``; ``others`` are those we trust (pinned) besides us."""
        me = next(m for m in members if m.user == self.user)
        previous = None if self.round is None else self.round.epoch
        self._group, self._members = group, members
        self._others = [m.user for m in others]
        for m in left:
            self.peers.forget(m.index)
            self._key_epoch.pop(m.index, None)
        if self.sender is None:  # our first roster: a fresh key, to everyone
            self.sender = OwnSender(SenderKey.fresh(me.index, 0))
            key, to = self.sender.current, others
        elif left:
            key, to = self.sender.on_leave(), others
        else:
            key = self.sender.on_join()
            self.peers.ratchet_all(now)
            for index, held in self._key_epoch.items():  # keys of the last epoch hold on;
                if held == previous:  # one still awaited (e.g. after a leave) does not
                    self._key_epoch[index] = epoch
            to = [m for m in others if m in joined]
        self._key_epoch[me.index] = epoch
        self.round = CodeRound(epoch, [m.index for m in members], me.index)
        self.code, self.failure = None, None
        self._fixed = {}
        out: Outgoing = [
            (m.user, gm.SenderKey(group, epoch, me.index, key.generation, key.step, key.base_key))
            for m in to
        ]
        out += [(m.user, gm.Commit(group, epoch, me.index, self.round.own_commit)) for m in others]
        return out + self._progress()

    def on_deliver(self, message: gm.SenderKey | gm.Commit | gm.Reveal, now: float) -> Outgoing:
        """A sender key, commit or reveal the roster checked (right member, this epoch)."""
        try:
            if isinstance(message, gm.SenderKey):
                key = SenderKey(message.index, message.generation, message.step, message.key)
                # An earlier epoch's key (the roster checked that only joins came since): its
                # sender ratcheted it once per join, and so do we.
                epoch = message.epoch if self.round is None else self.round.epoch
                for _ in range(epoch - message.epoch):
                    key = key.ratcheted()
                self.peers.install(key, now)
                self._key_epoch[message.index] = max(epoch, message.epoch)
            elif self.round is not None and isinstance(message, gm.Commit):
                self.round.add_commit(message.index, message.commitment)
            elif self.round is not None and isinstance(message, gm.Reveal):
                self.round.add_reveal(message.index, message.nonce)
        except StaleSenderKey:
            self.dropped["stale_key"] += 1
        except GroupCodeError as exc:
            self.failure = str(exc)
        return self._progress()

    def _progress(self) -> Outgoing:
        """Our reveal once every commit is in; the code once everything is."""
        r = self.round
        if r is None or r.failure is not None:
            return []
        out: Outgoing = []
        keys_in = all(self._key_epoch.get(m.index) == r.epoch for m in self._members)
        if r.ready_to_reveal and keys_in and r.epoch not in self._revealed:
            self._fixed = self._key_commitments()  # what the code will bind, fixed from now on
            self._revealed.add(r.epoch)
            reveal = gm.Reveal(self._group, r.epoch, r.own_index, r.own_reveal())
            out = [(user, reveal) for user in self._others]
        if not r.complete or self.code is not None or r.epoch not in self._revealed:
            return out
        if not keys_in or self._key_commitments() != self._fixed:
            self.failure = "a member's sender key changed after the reveals began"
            return out
        inputs = [
            CodeMember(m.user, m.identity_key, m.index, m.frame_key, self._fixed[m.index])
            for m in self._members
        ]
        self.code = r.code(inputs)
        return out

    def _key_commitments(self) -> dict[int, bytes]:
        """Each member's sender key of this epoch, as its commitment (ours included)."""
        assert self.sender is not None and self.round is not None
        fixed: dict[int, bytes] = {}
        for m in self._members:
            own = m.index == self.round.own_index
            key = self.sender.current if own else self.peers.get(m.index)
            if key is not None:
                fixed[m.index] = key.commitment()
        return fixed
