"""The agent's received-frame rate: what it reports to the mixer must stay a rate, also
when frames arrive in a burst after a stall (it used to reach 18 000 fps and fail the
protocol's ``fps <= 1000`` check, which stopped the agent)."""

from __future__ import annotations

from edge_agent.agent import Reception
from syncclass.protocol import Stats


def test_steady_rate() -> None:
    rx = Reception("lesson-1")
    rx.frame_times.extend(100.0 + i / 15 for i in range(60))  # 4 s at 15 fps
    assert abs(rx.fps(now=100.0 + 59 / 15) - 15.0) <= 0.5


def test_burst_after_stall_is_a_rate_and_a_valid_stats_message() -> None:
    rx = Reception("lesson-1")
    rx.frame_times.extend(50.0 + i * 1e-4 for i in range(120))  # 120 frames within 12 ms
    fps = rx.fps(now=50.012)
    assert fps == 60.0  # 120 frames in the 2 s window
    Stats(frames_received=120, fps=round(fps, 2), latency_ms={}, reconnects=0)


def test_stalled_is_zero() -> None:
    rx = Reception("lesson-1")
    rx.frame_times.extend(10.0 + i / 15 for i in range(30))
    assert rx.fps(now=20.0) == 0.0
