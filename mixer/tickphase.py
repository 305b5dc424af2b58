"""Composition ticks placed just after the teacher's frames arrive.

The mixer composes every classroom's latest picture at its own frame ticks. A picture
that arrives just after a tick waits almost a whole frame interval (67 ms at 15 fps) for
the next one; one that arrives just before waits almost nothing. Cameras and the mixer
run on unrelated clocks, so where the ticks fall is random per lesson (and moves whenever
a busy process re-phases its camera): the same lesson measured 44 ms and 64 ms
glass-to-glass p50 in two runs.

:class:`TickPhase` watches how long the main classroom's picture (the teacher, seen by
every receiving classroom and recorded) has waited at each tick and moves the tick grid,
a little per tick, so that this wait settles at a target: a fifth of a frame interval, or
twice the spread of recent waits when arrivals jitter more (a busy machine), at most half
an interval, so that a late picture rarely misses its tick. The receiving
classrooms' pictures, composed for the main classroom, keep a random phase: with several
unrelated cameras one grid cannot suit them all.
"""

from __future__ import annotations

import statistics
from collections import deque


class TickPhase:
    def __init__(self, period_s: float, target_s: float | None = None,
                 max_step_s: float = 0.002, window: int = 15) -> None:
        self.period = period_s
        self.base_target = period_s * 0.2 if target_s is None else target_s
        self.max_step = max_step_s
        self.phases: deque[float] = deque(maxlen=window)
        self.shifted_s = 0.0
        """Total shift applied so far (negative: ticks moved earlier)."""
        self._last_arrival: float | None = None

    def observe(self, tick_s: float, arrived_s: float | None) -> None:
        """At a tick (monotonic s), the teacher's latest picture arrived at ``arrived_s``.
        The same picture seen again (no new frame since the last tick) says nothing."""
        if arrived_s is None or arrived_s == self._last_arrival:
            return
        self._last_arrival = arrived_s
        wait = tick_s - arrived_s
        if wait < 0 or wait > 4 * self.period:
            return
        phase = wait % self.period
        if phase > 0.9 * self.period:  # just missed: really a small negative margin
            phase -= self.period
        self.phases.append(phase)

    @property
    def wait_s(self) -> float | None:
        """Median wait of the teacher's picture for its tick, lately."""
        if len(self.phases) < (self.phases.maxlen or 1) // 2:
            return None
        return statistics.median(self.phases)

    @property
    def target(self) -> float:
        """The wait aimed at: the base target, or more when arrivals jitter."""
        if len(self.phases) < 4:
            return self.base_target
        quintiles = statistics.quantiles(self.phases, n=5)
        q20, q80 = quintiles[0], quintiles[3]
        return min(0.5 * self.period, max(self.base_target, 2 * (q80 - q20)))

    def shift(self) -> float:
        """Seconds to move the next tick by (negative: earlier); call once per tick."""
        wait = self.wait_s
        if wait is None:
            return 0.0
        error = wait - self.target
        if abs(error) < 0.001:
            return 0.0
        step = -max(-self.max_step, min(self.max_step, error))
        # The waits already seen would have been shorter (or longer) by the same step.
        self.phases = deque((p + step for p in self.phases), maxlen=self.phases.maxlen)
        self.shifted_s += step
        return step
