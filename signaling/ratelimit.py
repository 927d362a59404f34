"""Token buckets for the per-user rates; pure, the clock is passed in.

Every frame a connection sends spends a token, the login included, so a flood of malformed
frames before login costs the sender as much as a flood of envelopes after it.
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

    def __len__(self) -> int:
        return len(self._buckets)
