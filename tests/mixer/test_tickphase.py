"""The composition ticks move to just after the teacher's frames arrive, whatever phase
the lesson started with, and follow a camera whose clock runs slightly fast."""

from __future__ import annotations

import numpy as np
import pytest

from mixer.tickphase import TickPhase

PERIOD = 1 / 15


def simulate(start_phase: float, seconds: float, camera_period: float = PERIOD,
             jitter_s: float = 0.002, seed: int = 1) -> tuple[TickPhase, list[float]]:
    """Frames arrive every ``camera_period`` (+ jitter); the mixer ticks every PERIOD,
    first at ``start_phase`` after a frame, moving its grid as TickPhase says. Returns
    the wait of each new teacher picture for its tick."""
    rng = np.random.default_rng(seed)
    tp = TickPhase(PERIOD)
    grid = np.arange(0, seconds + 1, camera_period)
    arrivals = grid + rng.uniform(0, jitter_s, len(grid))
    tick = start_phase
    waits: list[float] = []
    last_used = None
    while tick < seconds:
        latest = arrivals[arrivals <= tick]
        arrived = float(latest[-1]) if len(latest) else None
        tp.observe(tick, arrived)
        if arrived is not None and arrived != last_used:
            waits.append(tick - arrived)
            last_used = arrived
        tick += PERIOD + tp.shift()
    return tp, waits


@pytest.mark.parametrize("start_phase", [0.003, 0.030, 0.060])
def test_ticks_settle_just_after_the_teacher_frames(start_phase: float) -> None:
    tp, waits = simulate(start_phase, 20.0)
    late = waits[-75:]  # the last 5 s
    assert tp.wait_s == pytest.approx(tp.target, abs=0.003)
    assert float(np.median(late)) == pytest.approx(PERIOD * 0.2, abs=0.004)
    assert max(late) < PERIOD * 0.2 + 0.006  # no frame waits a whole interval any more
    assert len(waits) >= 0.95 * 20 * 15  # and none is skipped


def test_follows_a_camera_clock_that_runs_fast() -> None:
    _, waits = simulate(0.040, 30.0, camera_period=PERIOD * (1 - 500e-6))  # 500 ppm
    assert float(np.median(waits[-75:])) == pytest.approx(PERIOD * 0.2, abs=0.004)


def test_no_teacher_picture_no_shift() -> None:
    tp = TickPhase(PERIOD)
    for k in range(30):
        tp.observe(k * PERIOD, None)
        assert tp.shift() == 0.0
    assert tp.wait_s is None


def test_jittery_arrivals_get_more_headroom() -> None:
    tp, waits = simulate(0.030, 20.0, jitter_s=0.020)  # a busy machine
    late = waits[-75:]
    assert tp.target > PERIOD * 0.2
    assert len(waits) >= 0.9 * 20 * 15  # few pictures miss their tick
    assert float(np.median(late)) < PERIOD * 0.5
