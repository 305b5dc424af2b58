"""A synthetic bottleneck for the estimator's tests: a sender that follows
:class:`syncclass.gcc.GccEstimator`, a drop-tail FIFO link and transport feedback."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from syncclass.gcc import GccConfig, GccEstimator
from syncclass.twcc import FeedbackBuilder, SendHistory, TransportFeedback


@dataclass
class LinkSim:
    """``capacity_kbps(t)`` link with ``delay_s`` one way, a queue of at most ``queue_s``
    at its rate, random ``loss``; 15 fps video of 1200-byte packets at the target."""

    capacity_kbps: Callable[[float], float]
    delay_s: float = 0.02
    queue_s: float = 0.5
    loss: float = 0.0
    fps: float = 15.0
    feedback_s: float = 0.1
    seed: int = 1
    keyframe_every_s: float = 0.0
    """Every this often a frame ``keyframe_factor`` times the average (0: none)."""
    keyframe_factor: float = 5.0
    pace_factor: float = 0.0
    stall_every_s: float = 0.0
    """The receiver's event loop is blocked for ``stall_s`` this often (0: never); what
    arrives meanwhile is stamped when it ends, as on a busy mixer."""
    stall_s: float = 0.04
    """Packets leave at most at this times the target (0: as a burst)."""
    estimator: GccEstimator = field(default_factory=lambda: GccEstimator(GccConfig()))
    trace: list[tuple[float, float, float]] = field(default_factory=list)
    """(time s, target kbit/s, queueing delay s) per frame."""

    def run(self, seconds: float) -> None:
        rnd = random.Random(self.seed)
        history, builder = SendHistory(), FeedbackBuilder(1)
        link_free_s = 0.0
        in_flight: list[tuple[float, int, int]] = []  # arrival time, seq, size
        next_fb = self.feedback_s
        t = 0.0
        while t < seconds:
            target = self.estimator.target_kbps()
            frame_bytes = int(target * 1000 / 8 / self.fps)
            if self.keyframe_every_s and int(t * self.fps) % int(
                    self.keyframe_every_s * self.fps) == 0:
                frame_bytes = int(frame_bytes * self.keyframe_factor)
            n = max(1, -(-frame_bytes // 1200))
            cap = self.capacity_kbps(t) * 1000 / 8  # bytes/s
            queue_delay = max(0.0, link_free_s - t)
            for i in range(n):
                size = min(1200, frame_bytes - i * 1200) if frame_bytes > i * 1200 else 200
                send = t + i * (0.0005 if not self.pace_factor
                                else 1200 * 8 / (self.pace_factor * target * 1000))
                seq = history.next_sequence_number(send, size)
                start = max(send, link_free_s)
                if start - send > self.queue_s or rnd.random() < self.loss:
                    continue  # dropped at the full queue, or lost on the way
                link_free_s = start + size / cap
                in_flight.append((link_free_s + self.delay_s, seq, size))
            self.trace.append((t, target, queue_delay))
            t += 1 / self.fps
            while next_fb <= t:
                for arr, seq, _size in sorted(in_flight):
                    if arr <= next_fb:
                        stamp = arr
                        if self.stall_every_s:
                            phase = arr % self.stall_every_s
                            if phase < self.stall_s:
                                stamp = arr - phase + self.stall_s
                        builder.add(seq, int(stamp * 1e6))
                in_flight = [p for p in in_flight if p[0] > next_fb]
                for fb in builder.build():
                    wire = TransportFeedback.parse(bytes(fb))
                    fb_arrival = next_fb + self.delay_s
                    self.estimator.on_rtt(2 * self.delay_s)
                    self.estimator.on_feedback(history.on_feedback(wire), fb_arrival)
                next_fb += self.feedback_s

    def mean_target(self, t0: float, t1: float) -> float:
        xs = [k for t, k, _ in self.trace if t0 <= t < t1]
        return sum(xs) / len(xs)

    def max_queue(self, t0: float, t1: float) -> float:
        return max(q for t, _, q in self.trace if t0 <= t < t1)

    def p90_queue(self, t0: float, t1: float) -> float:
        qs = sorted(q for t, _, q in self.trace if t0 <= t < t1)
        return qs[int(0.9 * (len(qs) - 1))]
