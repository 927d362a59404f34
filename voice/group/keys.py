"""Sender keys of a group call (docs/group-calls.md, "Sender keys and KIDs").

Pure: keys arrive and leave as :class:`SenderKey` values, the clock comes in as ``now``
(seconds, any monotonic origin) and randomness as ``randbytes``. Each member seals its frames
with SFrame suite AES_256_GCM_SHA512_128 under its own base key; the KID says whose key and
which one:

    KID = (index << 24) | (generation << 8) | (step mod 256)

    index       0..255       the member index the creator gave it in the roster (8 bits)
    generation  0..2**16-1   +1 on every leave or removal: a fresh random key (16 bits)
    step        0, 1, ...    +1 on every join: base_key <- sframe.ratchet(base_key);
                             only its low 8 bits travel (R = 8)

So a KID fits in 32 bits; a value beyond these limits raises ValueError.

(KID, CTR) pairs. A sender's counter restarts at 0 with every new key, which is safe because
every new key has a new KID: a step changes the low 8 bits, a generation the middle 16. The
one repetition is after 256 joins in one generation, when the step bits wrap: the KID comes
back, but with another base key (a ratchet output), so its key and salt differ and no AEAD
nonce repeats; a receiver drops the old KID before installing the new one (PeerKeys does).

A receiver (:class:`PeerKeys`) keeps a sender's previous key :data:`GRACE_S` seconds after a
change, for frames in flight, then forgets it. Who may send a key, and for which epoch, is the
roster's business (voice.group.roster); this module only refuses a key older than the one held.

Never logged, never in a repr: base keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from voice.crypto._bytes import constant_time_equal, sha256
from voice.errors import StaleSenderKey
from voice.group.sframe import CipherSuite, SFrameReceiver, SFrameSender, compose_kid, ratchet

__all__ = [
    "BASE_KEY_BYTES",
    "GRACE_S",
    "MAX_GENERATION",
    "MAX_INDEX",
    "SUITE",
    "OwnSender",
    "PeerKeys",
    "SenderKey",
    "group_kid",
    "parse_group_kid",
]

SUITE = CipherSuite.AES_256_GCM_SHA512_128
BASE_KEY_BYTES = 32  # a fresh key; a ratcheted one is the suite's Nh (64) bytes
GRACE_S = 2.0  # how long a receiver keeps a sender's previous key after a change
MAX_INDEX = 255
MAX_GENERATION = 2**16 - 1
R_BITS = 8
_INDEX_SHIFT = 24
COMMITMENT_LABEL = b"voice group sender key v1"

RandBytes = Callable[[int], bytes]


def group_kid(index: int, generation: int, step: int) -> int:
    """The KID of member ``index``'s key at ``generation`` and ``step`` (step mod 256 travels)."""
    _check_int("member index", index, MAX_INDEX)
    _check_int("key generation", generation, MAX_GENERATION)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError("the ratchet step is an integer from 0")
    return (index << _INDEX_SHIFT) | compose_kid(generation, step, R_BITS)


def parse_group_kid(kid: int) -> tuple[int, int, int]:
    """(index, generation, step mod 256) of a KID made by :func:`group_kid`."""
    _check_int("group KID", kid, 2**32 - 1)
    return kid >> _INDEX_SHIFT, (kid >> R_BITS) & MAX_GENERATION, kid & (2**R_BITS - 1)


def _check_int(name: str, value: int, top: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise ValueError(f"the {name} is an integer from 0 to {top}")


@dataclass(frozen=True)
class SenderKey:
    """One member's sender base key at one generation and ratchet step. Its repr hides the key."""

    index: int
    generation: int
    step: int
    base_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        group_kid(self.index, self.generation, self.step)  # checks the three numbers
        if not isinstance(self.base_key, bytes) or len(self.base_key) < BASE_KEY_BYTES:
            raise ValueError(f"a sender base key is at least {BASE_KEY_BYTES} bytes")

    @classmethod
    def fresh(cls, index: int, generation: int, *, randbytes: RandBytes = os.urandom) -> SenderKey:
        """A new random key at step 0: a newcomer's (generation 0), or after a leave."""
        return cls(index, generation, 0, randbytes(BASE_KEY_BYTES))

    @property
    def kid(self) -> int:
        return group_kid(self.index, self.generation, self.step)

    def ratcheted(self) -> SenderKey:
        """The key one join later. One way: its holder cannot compute this key back."""
        return SenderKey(self.index, self.generation, self.step + 1, ratchet(self.base_key, SUITE))

    def commitment(self) -> bytes:
        """SHA-256(label || base key): what the group code binds, without showing the key."""
        return sha256(COMMITMENT_LABEL + self.base_key)


class OwnSender:
    """The local member's sending side: seals frames under its current key, and rolls that key
    when the membership changes. Send the key :meth:`on_join` / :meth:`on_leave` return to the
    members the design says, before sealing frames of the new epoch."""

    def __init__(self, key: SenderKey, *, randbytes: RandBytes = os.urandom) -> None:
        self._randbytes = randbytes
        self._use(key)

    def __repr__(self) -> str:
        return f"<OwnSender {self._key!r} next CTR {self._sender.next_ctr}>"

    def _use(self, key: SenderKey) -> None:
        self._key = key
        self._sender = SFrameSender(key.kid, key.base_key, SUITE)  # CTR from 0 under a new KID

    @property
    def current(self) -> SenderKey:
        return self._key

    def protect(self, frame: bytes) -> bytes:
        """The SFrame ciphertext of one frame under the current key."""
        return self._sender.protect(frame)

    def on_join(self) -> SenderKey:
        """Ratchet one step (a member joined): the newcomer gets only this key and later ones."""
        self._use(self._key.ratcheted())
        return self._key

    def on_leave(self) -> SenderKey:
        """A fresh key of the next generation (a member left): the leaver never gets it.

        Raises ValueError after generation 2**16 - 1: the call must end (or restart) by then.
        """
        key = self._key
        self._use(SenderKey.fresh(key.index, key.generation + 1, randbytes=self._randbytes))
        return self._key


class PeerKeys:
    """The receiving side: the keys of every other member, one current key per member index,
    plus previous keys for :data:`GRACE_S` seconds after a change."""

    def __init__(self, *, grace_s: float = GRACE_S) -> None:
        self._grace = grace_s
        self._receiver = SFrameReceiver(SUITE)
        self._held: dict[int, SenderKey] = {}  # index -> the newest key
        self._retiring: dict[int, tuple[int, float]] = {}  # KID -> (index, deadline)

    def __repr__(self) -> str:
        return f"<PeerKeys {sorted(self._held.values(), key=lambda k: k.index)!r}>"

    @property
    def kids(self) -> frozenset[int]:
        """Every KID a frame may use now (current keys and keys in their grace period)."""
        return self._receiver.kids

    def get(self, index: int) -> SenderKey | None:
        """The newest key held for member ``index``, if any."""
        return self._held.get(index)

    def install(self, key: SenderKey, now: float) -> None:
        """Hold ``key`` as its member's newest; the one it replaces stays for the grace period.

        Raises StaleSenderKey for a key older than the one held, or another key at the same
        generation and step. The same key again is ignored (e.g. one this side ratcheted to).
        """
        held = self._held.get(key.index)
        if held is not None:
            if (key.generation, key.step) < (held.generation, held.step):
                raise StaleSenderKey(
                    f"member {key.index}: key (generation {key.generation}, step {key.step}) is "
                    f"older than the one held ({held.generation}, {held.step})"
                )
            if (key.generation, key.step) == (held.generation, held.step):
                if constant_time_equal(key.base_key, held.base_key):
                    return
                raise StaleSenderKey(
                    f"member {key.index}: another key for generation {key.generation}, "
                    f"step {key.step}"
                )
            self._retire(held, now)
        self._add(key)

    def ratchet_all(self, now: float) -> None:
        """A member joined: every held key ratchets one step, the previous ones retire."""
        for key in list(self._held.values()):
            self._retire(key, now)
            self._add(key.ratcheted())

    def forget(self, index: int) -> None:
        """Member ``index`` left: drop its keys now, in grace or not."""
        key = self._held.pop(index, None)
        if key is not None:
            self._receiver.remove_key(key.kid)
        for kid, (owner, _) in list(self._retiring.items()):
            if owner == index:
                self._drop_retiring(kid)

    def expire(self, now: float) -> None:
        """Drop the previous keys whose grace period is over (at ``now`` or before)."""
        for kid, (_, deadline) in list(self._retiring.items()):
            if now >= deadline:
                self._drop_retiring(kid)

    def unprotect(self, data: bytes, now: float) -> tuple[int, bytes]:
        """(member index, frame) of an SFrame ciphertext. Expires old keys first, then raises
        as SFrameReceiver does: SFrameError, UnknownKeyId for a KID not held."""
        self.expire(now)
        kid, frame = self._receiver.unprotect(data)
        return kid >> _INDEX_SHIFT, frame

    def _retire(self, key: SenderKey, now: float) -> None:
        self._retiring[key.kid] = (key.index, now + self._grace)

    def _add(self, key: SenderKey) -> None:
        kid = key.kid
        if kid in self._receiver:  # the step bits wrapped (or the newest key itself): replace
            self._retiring.pop(kid, None)
            self._receiver.remove_key(kid)
        self._receiver.add_key(kid, key.base_key)
        self._held[key.index] = key

    def _drop_retiring(self, kid: int) -> None:
        del self._retiring[kid]
        self._receiver.remove_key(kid)
