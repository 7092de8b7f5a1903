"""Token buckets and the abuse counter (pure)."""

from __future__ import annotations

import time

from orchestrator.limits import AbuseCounter, TokenBucket


def test_bucket_allows_burst_then_rate():
    bucket = TokenBucket(rate=100.0, burst=5)
    assert all(bucket.take() for _ in range(5))
    assert not bucket.take()
    time.sleep(0.05)  # ~5 tokens back at 100/s
    assert bucket.take()


def test_bucket_amounts():
    bucket = TokenBucket(rate=1.0, burst=1000)
    assert bucket.take(999) and not bucket.take(2) and bucket.take(1)


def test_abuse_counter_fires_once_per_window():
    counter = AbuseCounter(limit=3, window_s=60)
    assert [counter.hit() for _ in range(5)] == [False, False, True, False, False]
