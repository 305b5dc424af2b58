"""The send-side estimator (syncclass.gcc) on a simulated bottleneck (tests/core/gcc_sim.py)."""

from __future__ import annotations

import pytest

from syncclass.gcc import GccConfig, GccEstimator, TrendlineDetector
from syncclass.twcc import PacketResult

from .gcc_sim import LinkSim


@pytest.mark.parametrize("cap", [384.0, 1024.0])
@pytest.mark.parametrize("loss", [0.0, 0.02])
def test_converges_near_capacity_with_a_short_queue(cap: float, loss: float) -> None:
    sim = LinkSim(lambda t: cap, loss=loss)
    sim.run(30)
    assert 0.75 * cap <= sim.mean_target(10, 30) <= 1.05 * cap
    # the queue stays short: a round trip within link delay + 100 ms
    assert sim.p90_queue(10, 30) < 0.1


def test_fast_start_reaches_the_link_rate_in_seconds() -> None:
    sim = LinkSim(lambda t: 1024.0)
    sim.run(6)
    reached = next(t for t, k, _ in sim.trace if k >= 0.75 * 1024)
    assert reached < 4.0  # from 300 kbit/s; at 8 %/s it would take 16 s


def test_follows_the_link_when_its_rate_halves_and_returns() -> None:
    sim = LinkSim(lambda t: 512.0 if 20 <= t < 40 else 1024.0)
    sim.run(60)
    assert sim.mean_target(25, 40) <= 512 * 1.05
    assert sim.max_queue(23, 40) < 0.2  # drained within 3 s of the drop
    assert sim.mean_target(52, 60) >= 0.8 * 1024  # back within 12 s


def test_heavy_loss_cuts_the_estimate() -> None:
    est = GccEstimator(GccConfig(start_kbps=1000))
    sent = 0.0
    for k in range(60):  # 6 s of feedback, 20 % lost, arrivals paced like the sends
        results = [PacketResult(k * 10 + i, sent + i * 0.01, 1000,
                                None if i % 5 == 0 else sent + i * 0.01 + 0.02)
                   for i in range(10)]
        sent += 0.1
        est.on_feedback(results, sent + 0.05)
    assert est.loss_fraction == pytest.approx(0.2)
    assert est.target_kbps() < 700


def test_detector_sees_a_growing_queue_and_not_a_steady_one() -> None:
    steady, growing = TrendlineDetector(), TrendlineDetector()
    seen_steady, seen_growing = set(), set()
    for i in range(60):
        t = i * 0.066
        seen_steady.add(steady.update(66.0, 66.0, t))
        seen_growing.add(growing.update(76.0, 66.0, t))  # +10 ms of queue per frame
    assert "overuse" in seen_growing
    assert seen_steady == {"normal"}
