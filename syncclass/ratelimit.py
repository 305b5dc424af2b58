"""Token-bucket rate limits (pure: the caller passes the clock).

The mixer limits signaling per remote address (failed hellos: credential guessing) and
per classroom (joins: a flapping or misbehaving agent). A bucket holds up to ``burst``
tokens and refills at ``rate_per_s``; each event takes one token; an empty bucket refuses.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate_per_s: float
    """Refill rate, tokens per second."""
    burst: float
    """Capacity: events allowed back to back."""
    tokens: float = -1.0
    updated_s: float = 0.0
    """Monotonic seconds of the last refill."""

    def __post_init__(self) -> None:
        if self.rate_per_s < 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate_per_s >= 0 and burst >= 1")
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self, now_s: float) -> None:
        if now_s > self.updated_s:
            self.tokens = min(self.burst, self.tokens + (now_s - self.updated_s) * self.rate_per_s)
        self.updated_s = max(self.updated_s, now_s)

    def allow(self, now_s: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are enough; whether the event may proceed."""
        self._refill(now_s)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def peek(self, now_s: float) -> bool:
        """Whether one event would be allowed now (takes nothing)."""
        self._refill(now_s)
        return self.tokens >= 1.0

    def retry_after_s(self, now_s: float) -> float:
        """Seconds until one token is available (0 if one is)."""
        self._refill(now_s)
        if self.tokens >= 1.0:
            return 0.0
        if self.rate_per_s == 0:
            return float("inf")
        return (1.0 - self.tokens) / self.rate_per_s

    def full(self, now_s: float) -> bool:
        self._refill(now_s)
        return self.tokens >= self.burst


class RateLimiter:
    """One :class:`TokenBucket` per key (remote address, classroom id), bounded in memory.

    At most ``max_keys`` buckets are kept; beyond that, full buckets (keys that have been
    quiet) are forgotten first, then the least recently used, so an attacker cycling
    addresses cannot grow memory without bound.
    """

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0
        """Events refused so far."""

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str, now_s: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now_s)
            bucket = TokenBucket(self.rate_per_s, self.burst, updated_s=now_s)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
        return bucket

    def _evict(self, now_s: float) -> None:
        for k in [k for k, b in self._buckets.items() if b.full(now_s)]:
            del self._buckets[k]
        while len(self._buckets) >= self.max_keys:
            self._buckets.popitem(last=False)

    def allow(self, key: str, now_s: float) -> bool:
        """Take one token from ``key``'s bucket; whether the event may proceed."""
        ok = self._bucket(key, now_s).allow(now_s)
        if not ok:
            self.refused += 1
        return ok

    def blocked(self, key: str, now_s: float) -> bool:
        """Whether ``key``'s bucket is empty (takes nothing; creates no bucket)."""
        bucket = self._buckets.get(key)
        return bucket is not None and not bucket.peek(now_s)

    def retry_after_s(self, key: str, now_s: float) -> float:
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.retry_after_s(now_s)


class LogLimiter:
    """Bounds how many lines a noisy log site writes: ``burst`` lines back to back, then
    ``rate_per_s``; the lines left out are counted and the next line written says how many
    (a flood of bad messages must not become a flood of log lines)."""

    def __init__(self, rate_per_s: float = 1.0, burst: float = 10.0) -> None:
        self._bucket = TokenBucket(rate_per_s, burst)
        self.suppressed = 0
        """Lines left out since the last one written."""

    def allow(self, now_s: float) -> int | None:
        """``None``: leave this line out; otherwise write it, noting the returned number
        of lines left out before it."""
        if not self._bucket.allow(now_s):
            self.suppressed += 1
            return None
        left_out, self.suppressed = self.suppressed, 0
        return left_out
