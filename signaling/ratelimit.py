"""Token buckets for the per-user rates; pure, the clock is passed in.

Every frame a connection sends spends a token, the login included, so a flood of malformed
frames before login costs the sender as much as a flood of envelopes after it.

:meth:`TokenBucket.level` and :meth:`TokenBucket.restore` carry a bucket to another server
instance (``signaling.cluster``): a user who logs in elsewhere keeps the tokens it had, not a
fresh burst.
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one token per message."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means over the rate (drop the message)."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = max(self._stamp, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def level(self, now: float) -> float:
        """Tokens saved up at ``now`` (refilled, not spent): what a handover carries."""
        return min(self._burst, self._tokens + max(0.0, now - self._stamp) * self._rate)

    def restore(self, tokens: float, now: float) -> None:
        """Continue from ``tokens`` saved up at ``now`` (a level handed over by another
        process; clamped to 0..burst, so a bad level can never grant more than a new bucket)."""
        self._tokens = min(self._burst, max(0.0, tokens))
        self._stamp = now


class KeyedBuckets:
    """One :class:`TokenBucket` per key (a user, an address), at most ``max_keys`` of them.

    When full, the least recently used bucket is forgotten. A bucket left alone for
    ``burst / rate`` seconds is full again, as good as a new one, so forgetting it loses nothing;
    only more than ``max_keys`` keys active within that time lose their history (and then they
    get a fresh allowance, never less than their due).
    """

    __slots__ = ("_buckets", "_burst", "_max_keys", "_rate")

    def __init__(self, rate: float, burst: float, *, max_keys: int = 65_536) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        """Spend one of ``key``'s tokens; False means over its rate."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def level(self, key: str, now: float) -> float:
        """``key``'s tokens at ``now``; a key never seen (or forgotten) has a full bucket."""
        bucket = self._buckets.get(key)
        return self._burst if bucket is None else bucket.level(now)

    def restore(self, key: str, tokens: float, now: float) -> None:
        """Set ``key``'s bucket to ``tokens`` at ``now`` (see :meth:`TokenBucket.restore`)."""
        self.take(key, now)  # creates it (least recently used bookkeeping included)
        self._buckets[key].restore(tokens, now)

    def __len__(self) -> int:
        return len(self._buckets)
