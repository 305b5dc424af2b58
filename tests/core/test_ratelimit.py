"""Token buckets: burst, refill, bounded memory."""

from __future__ import annotations

import pytest

from syncclass.ratelimit import RateLimiter, TokenBucket


def test_bucket_burst_then_refill() -> None:
    b = TokenBucket(rate_per_s=2.0, burst=3, updated_s=0.0)
    assert [b.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.retry_after_s(0.0) == pytest.approx(0.5)
    assert not b.allow(0.4)
    assert b.allow(0.5)
    assert b.allow(10.0) and b.allow(10.0) and b.allow(10.0) and not b.allow(10.0)


def test_bucket_clock_going_back_is_harmless() -> None:
    b = TokenBucket(rate_per_s=1.0, burst=1, updated_s=5.0)
    assert b.allow(5.0)
    assert not b.allow(1.0)  # an older timestamp never adds tokens


def test_limiter_keys_independent_and_bounded() -> None:
    lim = RateLimiter(rate_per_s=0.0, burst=2, max_keys=100)
    assert lim.allow("a", 0) and lim.allow("a", 0) and not lim.allow("a", 0)
    assert lim.allow("b", 0)
    assert lim.blocked("a", 0) and not lim.blocked("b", 0) and not lim.blocked("zz", 0)
    assert lim.refused == 1
    for i in range(1000):
        lim.allow(f"addr-{i}", 1.0)
    assert len(lim) <= 100


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=1, burst=0)
    with pytest.raises(ValueError):
        RateLimiter(1, 1, max_keys=0)
