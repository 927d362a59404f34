"""Freshness checks for opened envelopes: replay, reordering beyond a window, maximum age.

State is kept per (sender identity key, call id): the highest sequence number seen and a bitmap of
the ``window`` numbers below it (as IPsec and SRTP do). An entry is kept until no envelope of that
call could still pass the age check (newest timestamp + ``max_age``, and at least ``max_age`` after
it was last used), so replaying an old call's offer after the call ended is still refused:
first by this memory, later by the age check.

Memory is bounded: at most ``max_calls`` entries in all and ``max_calls_per_sender`` per sender.
When full, a *new* call is refused (never an old entry forgotten): failing closed means a replay
can never get through, and the per-sender cap keeps one peer from locking out the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voice.errors import BadEnvelope

if TYPE_CHECKING:
    from voice.crypto.envelope import EnvelopeHeader

__all__ = ["ReplayGuard"]


@dataclass
class _Window:
    highest: int
    bitmap: int  # bit i set: seq (highest - i) was seen; bit 0 is ``highest`` itself
    expires: float  # clock time after which no envelope of this call can pass the age check


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
    ) -> None:
        if max_age <= 0 or window < 1 or max_calls < 1 or max_calls_per_sender < 1:
            raise ValueError("max_age, window and the caps must be positive")
        self._clock = clock
        self._max_age = max_age
        self._max_skew = max_age if max_skew is None else max_skew
        self._window = window
        self._max_calls = max_calls
        self._max_per_sender = max_calls_per_sender
        self._calls: dict[tuple[bytes, bytes], _Window] = {}
        self._per_sender: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def remembered(self) -> list[tuple[bytes, bytes, float]]:
        """(sender key, call id, expires) of every call still remembered, to outlive a restart."""
        return [(sender, call_id, w.expires) for (sender, call_id), w in self._calls.items()]

    def refuse(self, entries: list[tuple[bytes, bytes, float]]) -> None:
        """Refuse every envelope of these calls until they expire (after a restart: those calls
        died with the old process, so nothing of theirs may be accepted, not even a new seq)."""
        now = self._clock()
        closed = (1 << self._window) - 1
        for sender, call_id, expires in entries:
            key = (bytes(sender), bytes(call_id))
            if expires < now or key in self._calls:
                continue
            # No uint64 seq is above this highest, and every one within the window is marked.
            self._calls[key] = _Window(highest=1 << 64, bitmap=closed, expires=expires)
            self._per_sender[key[0]] = self._per_sender.get(key[0], 0) + 1

    def check(self, sender_key: bytes, header: EnvelopeHeader, *, record: bool = True) -> bool:
        """Accept the envelope (and remember it) or raise BadEnvelope. Only call it after
        :func:`open_envelope` succeeded, so forged envelopes cannot fill the memory.

        Returns True if the envelope starts a call the guard did not remember (a journal of
        :meth:`remembered` must then be rewritten). With ``record=False`` nothing is remembered:
        the caller learns whether the envelope would pass, and records it later (once it knows
        the sender key is the pinned one) with a second call.
        """
        now = self._clock()
        age = now - header.timestamp_ms / 1000.0
        if age > self._max_age or -age > self._max_skew:
            raise BadEnvelope("bad envelope")
        key = (bytes(sender_key), bytes(header.call_id))
        expires = max(now, header.timestamp_ms / 1000.0) + self._max_age
        state = self._calls.get(key)
        if state is None:
            self._expire(now)
            if (
                len(self._calls) >= self._max_calls
                or self._per_sender.get(key[0], 0) >= self._max_per_sender
            ):
                raise BadEnvelope("bad envelope")
            if record:
                self._calls[key] = _Window(highest=header.seq, bitmap=1, expires=expires)
                self._per_sender[key[0]] = self._per_sender.get(key[0], 0) + 1
            return True
        seq = header.seq
        if seq <= state.highest:
            offset = state.highest - seq
            if offset >= self._window or state.bitmap >> offset & 1:
                raise BadEnvelope("bad envelope")
        if not record:
            return False
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
        return False

    def _expire(self, now: float) -> None:
        stale = [k for k, w in self._calls.items() if w.expires < now]
        for k in stale:
            del self._calls[k]
            left = self._per_sender[k[0]] - 1
            if left:
                self._per_sender[k[0]] = left
            else:
                del self._per_sender[k[0]]
