"""Freshness checks for opened envelopes: replay, reordering beyond a window, maximum age.

State is kept per (sender identity key, call id): the highest sequence number seen and a bitmap of
the ``window`` numbers below it (as IPsec and SRTP do). An entry is kept until no envelope of that
call could still pass the age check (newest timestamp + ``max_age``, and at least ``max_age`` after
it was last used), so replaying an old call's offer after the call ended is still refused:
first by this memory, later by the age check.

Memory is bounded, in two pools, so that strangers can never crowd out the people we know:

* **solicited** senders (contacts we dialed or verified, peers of live calls): at most
  ``max_calls`` entries in all and ``max_calls_per_sender`` per sender. When full, a *new* call
  is refused (never an old entry forgotten): failing closed means a replay can never get
  through, and the per-sender cap keeps one peer from locking out the others.
* **unsolicited** senders (first contacts, and contacts that only ever called us): a small pool
  of their own (``max_unsolicited``, ``max_unsolicited_per_sender``). When it is full, the
  least recently used entry is evicted, so a genuine first contact always finds room however
  many accounts an attacker makes. A call of theirs that becomes live (the user took it; its
  envelopes come under the call's own keys) moves to the solicited pool, out of eviction's
  reach (a ringing one does not, whatever keys it uses: strangers could fill that pool).
  An evicted call's offer is still refused by the inbound decision's larger memory of answered
  offers (voice.call.inbound), and a replayed offer can never connect (the replayer lacks the
  caller's ephemeral key).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voice.errors import BadEnvelope

if TYPE_CHECKING:
    from voice.crypto.envelope import EnvelopeHeader

__all__ = ["Entry", "ReplayGuard"]

Entry = tuple[bytes, bytes, float, bool]
"""(sender key, call id, expires, solicited): one remembered call, as the journal keeps it."""


@dataclass
class _Window:
    highest: int
    bitmap: int  # bit i set: seq (highest - i) was seen; bit 0 is ``highest`` itself
    expires: float  # clock time after which no envelope of this call can pass the age check


class _Pool:
    """Windows of one pool, with its caps. ``evict``: drop the least recently used when full
    (unsolicited) instead of refusing the new call (solicited)."""

    def __init__(self, max_calls: int, max_per_sender: int, *, evict: bool) -> None:
        if max_calls < 1 or max_per_sender < 1:
            raise ValueError("the caps must be positive")
        self.max_calls = max_calls
        self.max_per_sender = max_per_sender
        self.evict = evict
        self.calls: OrderedDict[tuple[bytes, bytes], _Window] = OrderedDict()
        self.per_sender: dict[bytes, int] = {}

    def room_for(self, sender: bytes) -> bool:
        """Make room for a new call of ``sender`` if this pool may; False if refused."""
        if self.per_sender.get(sender, 0) >= self.max_per_sender:
            return False
        if len(self.calls) >= self.max_calls:
            if not self.evict:
                return False
            self.remove(next(iter(self.calls)))
        return True

    def add(self, key: tuple[bytes, bytes], window: _Window) -> None:
        self.calls[key] = window
        self.per_sender[key[0]] = self.per_sender.get(key[0], 0) + 1

    def remove(self, key: tuple[bytes, bytes]) -> None:
        del self.calls[key]
        left = self.per_sender[key[0]] - 1
        if left:
            self.per_sender[key[0]] = left
        else:
            del self.per_sender[key[0]]

    def expire(self, now: float) -> None:
        for key in [k for k, w in self.calls.items() if w.expires < now]:
            self.remove(key)


class ReplayGuard:
    """Refuses replayed, badly reordered, too old and too far future envelopes.

    ``clock`` returns seconds since the epoch (same scale as the senders' ``timestamp_ms``).
    A timestamp more than ``max_skew`` seconds in the future (default: ``max_age``) is refused.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        max_age: float = 60.0,
        window: int = 64,
        max_skew: float | None = None,
        max_calls: int = 4096,
        max_calls_per_sender: int = 64,
        max_unsolicited: int = 256,
        max_unsolicited_per_sender: int = 4,
    ) -> None:
        if max_age <= 0 or window < 1:
            raise ValueError("max_age and window must be positive")
        self._clock = clock
        self.max_age = max_age
        self._max_skew = max_age if max_skew is None else max_skew
        self._window = window
        self._pools = {
            True: _Pool(max_calls, max_calls_per_sender, evict=False),
            False: _Pool(max_unsolicited, max_unsolicited_per_sender, evict=True),
        }

    def now(self) -> float:
        """The guard's clock (seconds since the epoch)."""
        return self._clock()

    def __len__(self) -> int:
        return sum(len(pool.calls) for pool in self._pools.values())

    def remembered(self) -> list[Entry]:
        """Every call still remembered, to outlive a restart."""
        return [
            (sender, call_id, w.expires, solicited)
            for solicited, pool in self._pools.items()
            for (sender, call_id), w in pool.calls.items()
        ]

    def entry(self, sender_key: bytes, call_id: bytes) -> Entry | None:
        """The remembered entry of one call (what the journal appends), or None."""
        key = (bytes(sender_key), bytes(call_id))
        for solicited, pool in self._pools.items():
            if key in pool.calls:
                return (key[0], key[1], pool.calls[key].expires, solicited)
        return None

    def refuse(self, entries: list[Entry]) -> None:
        """Refuse every envelope of these calls until they expire (after a restart: those calls
        died with the old process, so nothing of theirs may be accepted, not even a new seq)."""
        now = self._clock()
        closed = (1 << self._window) - 1
        for sender, call_id, expires, solicited in entries:
            key = (bytes(sender), bytes(call_id))
            if expires < now or self._find(key) is not None:
                continue
            pool = self._pools[solicited]
            if not pool.room_for(key[0]):
                continue
            # No uint64 seq is above this highest, and every one within the window is marked.
            pool.add(key, _Window(highest=1 << 64, bitmap=closed, expires=expires))

    def check(
        self,
        sender_key: bytes,
        header: EnvelopeHeader,
        *,
        record: bool = True,
        solicited: bool = True,
        live: bool = False,
    ) -> bool:
        """Accept the envelope (and remember it) or raise BadEnvelope. Only call it after
        :func:`open_envelope` succeeded, so forged envelopes cannot fill the memory.

        ``solicited`` says which pool a new call of this sender goes to (see the module
        docstring); ``live`` (the call was taken: the caller decides) moves a call from the
        pool that evicts to the one that does not. Returns True if the envelope
        starts a call the guard did not remember (the journal must then learn :meth:`entry`).
        With ``record=False`` nothing is remembered: the caller learns whether the envelope
        would pass, and records it later (once it knows the sender key is the pinned one)
        with a second call.
        """
        now = self._clock()
        age = now - header.timestamp_ms / 1000.0
        if age > self.max_age or -age > self._max_skew:
            raise BadEnvelope("bad envelope")
        key = (bytes(sender_key), bytes(header.call_id))
        expires = max(now, header.timestamp_ms / 1000.0) + self.max_age
        found = self._find(key)
        if found is None:
            pool = self._pools[solicited]
            pool.expire(now)
            full = pool.per_sender.get(key[0], 0) >= pool.max_per_sender or (
                len(pool.calls) >= pool.max_calls and not pool.evict
            )
            if full:
                raise BadEnvelope("bad envelope")
            if record:
                pool.room_for(key[0])
                pool.add(key, _Window(highest=header.seq, bitmap=1, expires=expires))
            return True
        pool, state = found
        seq = header.seq
        if seq <= state.highest:
            offset = state.highest - seq
            if offset >= self._window or state.bitmap >> offset & 1:
                raise BadEnvelope("bad envelope")
        if not record:
            return False
        if live and pool.evict and self._pools[True].room_for(key[0]):
            # A stranger's call that became live (its envelopes come under the call's keys):
            # it moves where nothing is evicted, or a flood of strangers' offers would push
            # its window out and let its earlier envelopes in again.
            pool.remove(key)
            pool = self._pools[True]
            pool.add(key, state)
        if seq > state.highest:
            # A jump of a window or more forgets everything older; shifting by the raw gap
            # would let a peer sending seq 2**62 make us allocate without bound.
            shift = seq - state.highest
            kept = state.bitmap << shift if shift < self._window else 0
            state.bitmap = (kept | 1) & ((1 << self._window) - 1)
            state.highest = seq
        else:
            state.bitmap |= 1 << (state.highest - seq)
        state.expires = max(state.expires, expires)
        pool.calls.move_to_end(key)  # recently used: evicted last
        return False

    def _find(self, key: tuple[bytes, bytes]) -> tuple[_Pool, _Window] | None:
        for pool in self._pools.values():
            window = pool.calls.get(key)
            if window is not None:
                return pool, window
        return None
