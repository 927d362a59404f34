"""The key layer of one member, pure: sender keys and the group code, epoch by epoch.

It turns the roster's cues into the messages the design asks for (docs/group-calls.md) and
returns them as ``(recipient, message)`` pairs for the session to seal and send, in order:

- a new epoch that adds members: our key ratchets one step, so does every key held, and ours
  goes to the newcomers only; a newcomer (our first roster) sends its fresh key to everyone;
- a new epoch that drops members: their keys are forgotten at once, and a fresh key of the
  next generation goes to every remaining member;
- then a commit to every other member; our reveal once every commit is in. The code is computed
  once every reveal is in *and* every member's sender key of this epoch is held (a key is bound
  into the code by its commitment), so a substituted key changes the code.

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
            for index in self._key_epoch:
                self._key_epoch[index] = epoch
            to = [m for m in others if m in joined]
        self._key_epoch[me.index] = epoch
        self.round = CodeRound(epoch, [m.index for m in members], me.index)
        self.code, self.failure = None, None
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
                self.peers.install(key, now)
                self._key_epoch[message.index] = message.epoch
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
        if r.ready_to_reveal and r.epoch not in self._revealed:
            self._revealed.add(r.epoch)
            reveal = gm.Reveal(self._group, r.epoch, r.own_index, r.own_reveal())
            out = [(user, reveal) for user in self._others]
        if not r.complete or self.code is not None:
            return out
        if any(self._key_epoch.get(m.index) != r.epoch for m in self._members):
            return out  # a member's key of this epoch is still on its way
        assert self.sender is not None
        inputs = []
        for m in self._members:
            key = self.sender.current if m.index == r.own_index else self.peers.get(m.index)
            assert key is not None
            commitment = key.commitment()
            inputs.append(CodeMember(m.user, m.identity_key, m.index, m.frame_key, commitment))
        self.code = r.code(inputs)
        return out
