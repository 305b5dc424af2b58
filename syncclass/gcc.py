"""A sender-side bandwidth estimator in the style of Google Congestion Control (no I/O).

After draft-ietf-rmcat-gcc-02 and libwebrtc's send-side estimator, fed by transport-wide
feedback (:mod:`syncclass.twcc`): for each feedback, the packets it reports (send time,
size, arrival time or lost) go through

- **grouping**: packets sent within 5 ms of the first of a group form one group (a video
  frame's packets leave together); each pair of consecutive groups gives a *delay
  variation* ``(arrival delta) - (send delta)``, ms;
- **trendline filter**: the accumulated delay variation is smoothed and a line fitted over
  the last 20 groups; its slope, scaled, says whether queues along the path are growing;
- **overuse detector** with an adaptive threshold (it grows slowly with the trend's size
  and falls fast, so a path with noisy delay does not starve): overuse, normal or underuse;
- **AIMD rate control**: on overuse the estimate drops to 0.85 × the rate the receiver
  got (its *acknowledged* rate); while normal it grows, multiplicatively (8 %/s) far from
  the last congestion point and additively (about a packet per response time) near it;
  never above 1.5 × the acknowledged rate + 10 kbit/s (no growth on rate never tried);
- **fast start**: until the first overuse or loss the estimate grows by 1.5× per
  ``fast_start_step_s`` (bounded the same way), so a classroom starting at
  ``start_kbps`` reaches its link's rate in seconds rather than a minute at 8 %/s;
- **loss-based bound**: over each ``loss_window_s``, loss above 10 % cuts the estimate to
  ``(1 - loss / 2)`` of it; loss below 2 % lets the bound grow again by 8 %/s; in between
  it holds. The target is the smaller of the delay-based and loss-based estimates.

All times in seconds (monotonic on the sender; the receiver's arrival clock has any
origin: only differences are used), rates in kbit/s, sizes in bytes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .twcc import PacketResult

Usage = Literal["normal", "overuse", "underuse"]


@dataclass(frozen=True)
class GccConfig:
    """Knobs of the estimator (libwebrtc's defaults where it has them)."""

    start_kbps: float = 300.0
    """The estimate before any feedback (libwebrtc starts at 300 kbit/s)."""
    min_kbps: float = 50.0
    max_kbps: float = 2500.0
    burst_s: float = 0.005
    """Packets sent within this of a group's first are one group, s."""
    window: int = 20
    """Groups in the trendline's regression window."""
    smoothing: float = 0.9
    threshold_gain: float = 4.0
    initial_threshold_ms: float = 12.5
    k_up: float = 0.0087
    k_down: float = 0.039
    overuse_time_ms: float = 10.0
    """The trend must stay above the threshold this long to count as overuse, ms."""
    beta: float = 0.85
    """On overuse the estimate drops to this fraction of the acknowledged rate."""
    increase_per_s: float = 0.08
    """Multiplicative growth per second far from the last congestion point."""
    additive_packets: float = 0.5
    """Additive increase near the last congestion point: packets per response time."""
    fast_start_factor: float = 1.5
    fast_start_step_s: float = 0.5
    ack_window_s: float = 0.5
    """The acknowledged rate is measured over this long of arrivals, s."""
    queue_guard_ms: float = 25.0
    """A trendline overuse counts only while the standing queue (the smallest one-way
    delay above its 10 s minimum over the last ``standing_window_s``) exceeds this, ms.
    Each periodic keyframe (every 2 s) queues for a moment on a thin link, which the
    trendline alone reads as overuse (measured: an agent on a 384 kbit/s link was cut at
    every keyframe, to ~190 kbit/s with its queue empty between them)."""
    standing_window_s: float = 0.5
    queue_max_ms: float = 100.0
    """A standing queue above this is overuse whatever the trend, ms."""
    base_delay_window_s: float = 10.0
    loss_window_s: float = 1.0
    high_loss: float = 0.10
    low_loss: float = 0.02


@dataclass
class _Group:
    first_send_s: float
    last_send_s: float
    last_arrival_s: float
    size_bytes: int


@dataclass
class TrendlineDetector:
    """Trendline filter + overuse detector (one instance per estimator)."""

    config: GccConfig = field(default_factory=GccConfig)
    threshold_ms: float = 0.0
    accumulated_ms: float = 0.0
    smoothed_ms: float = 0.0
    deltas: int = 0
    trend: float = 0.0
    usage: Usage = "normal"
    _history: deque[tuple[float, float]] = field(default_factory=deque)
    _first_arrival_s: float | None = None
    _overuse_ms: float = -1.0
    _overuse_count: int = 0
    _last_update_s: float | None = None
    _previous_trend: float = 0.0

    def __post_init__(self) -> None:
        self.threshold_ms = self.threshold_ms or self.config.initial_threshold_ms

    def update(self, recv_delta_ms: float, send_delta_ms: float, arrival_s: float) -> Usage:
        """One group pair: arrival and send deltas (ms), the later group's arrival (s)."""
        c = self.config
        if self._first_arrival_s is None:
            self._first_arrival_s = arrival_s
        self.deltas = min(self.deltas + 1, 1000)
        self.accumulated_ms += recv_delta_ms - send_delta_ms
        self.smoothed_ms = c.smoothing * self.smoothed_ms + (1 - c.smoothing) * self.accumulated_ms
        self._history.append(((arrival_s - self._first_arrival_s) * 1000.0, self.smoothed_ms))
        if len(self._history) > c.window:
            self._history.popleft()
        if len(self._history) == c.window:
            self.trend = _slope(self._history)
        self._detect(send_delta_ms, arrival_s)
        return self.usage

    def _detect(self, send_delta_ms: float, now_s: float) -> None:
        c = self.config
        modified = min(self.deltas, 60) * self.trend * c.threshold_gain
        previous_trend = self._previous_trend
        if modified > self.threshold_ms:
            self._overuse_ms = send_delta_ms if self._overuse_ms < 0 else (
                self._overuse_ms + send_delta_ms)
            self._overuse_count += 1
            if (self._overuse_ms > c.overuse_time_ms and self._overuse_count > 1
                    and self.trend >= previous_trend):
                self._overuse_ms = 0.0
                self._overuse_count = 0
                self.usage = "overuse"
        elif modified < -self.threshold_ms:
            self._overuse_ms = -1.0
            self._overuse_count = 0
            self.usage = "underuse"
        else:
            self._overuse_ms = -1.0
            self._overuse_count = 0
            self.usage = "normal"
        self._previous_trend = self.trend
        self._update_threshold(modified, now_s)

    def _update_threshold(self, modified: float, now_s: float) -> None:
        c = self.config
        if self._last_update_s is None:
            self._last_update_s = now_s
        if abs(modified) > self.threshold_ms + 15.0:
            # A spike (a keyframe, a route change) must not raise the threshold.
            self._last_update_s = now_s
            return
        k = c.k_down if abs(modified) < self.threshold_ms else c.k_up
        dt_ms = min((now_s - self._last_update_s) * 1000.0, 100.0)
        self.threshold_ms += k * (abs(modified) - self.threshold_ms) * dt_ms
        self.threshold_ms = min(max(self.threshold_ms, 6.0), 600.0)
        self._last_update_s = now_s


def _slope(points: Iterable[tuple[float, float]]) -> float:
    pts = list(points)
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    num = sum((x - mx) * (y - my) for x, y in pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return num / den if den > 0 else 0.0


@dataclass
class GccEstimator:
    """Delay- and loss-based send-side estimate of one transport (kbit/s)."""

    config: GccConfig = field(default_factory=GccConfig)
    delay_kbps: float = 0.0
    loss_kbps: float = math.inf
    detector: TrendlineDetector = field(default_factory=TrendlineDetector)
    rtt_s: float = 0.1
    fast_start: bool = True
    """Until the first overuse or loss above ``low_loss``."""
    state: Literal["hold", "increase", "decrease"] = "increase"
    link_capacity_kbps: float | None = None
    """The acknowledged rate at the last overuse (smoothed)."""
    overuses: int = 0
    loss_fraction: float = 0.0
    """Loss over the last complete loss window."""
    _group: _Group | None = None
    _previous: _Group | None = None
    _acked: deque[tuple[float, int]] = field(default_factory=deque)
    _last_change_s: float | None = None
    _last_decrease_s: float = -math.inf
    usage: Usage = "normal"
    """The last group pair's verdict (the detector's, vetoed without a standing queue)."""
    queue_ms: float = 0.0
    """Standing queue: the smallest queueing delay (one-way delay above its minimum over
    the last ``base_delay_window_s``) over the last ``standing_window_s``, ms."""
    _base: deque[tuple[float, float]] = field(default_factory=deque)
    _recent: deque[tuple[float, float]] = field(default_factory=deque)
    _loss_window: list[int] = field(default_factory=lambda: [0, 0])
    _loss_window_start_s: float | None = None
    _last_loss_update_s: float | None = None

    def __post_init__(self) -> None:
        self.delay_kbps = self.delay_kbps or self.config.start_kbps
        self.detector = TrendlineDetector(self.config)

    def target_kbps(self) -> float:
        """The estimate now, kbit/s."""
        c = self.config
        return max(c.min_kbps, min(c.max_kbps, self.delay_kbps, self.loss_kbps))

    def acked_kbps(self) -> float | None:
        """What the receiver got over the last ``ack_window_s`` of arrivals, kbit/s."""
        if len(self._acked) < 2:
            return None
        span = self._acked[-1][0] - self._acked[0][0]
        if span < 0.05:
            return None
        total = sum(size for _, size in list(self._acked)[1:])
        return total * 8 / 1000 / span

    def on_rtt(self, rtt_s: float) -> None:
        """A round-trip time measurement, s."""
        if rtt_s > 0:
            self.rtt_s = rtt_s

    def on_feedback(self, results: list[PacketResult], now_s: float) -> float:
        """Take the packets one transport feedback reported (in sequence order) at
        monotonic ``now_s``; the new target, kbit/s."""
        lost = sum(1 for r in results if r.arrival_s is None)
        self._loss(len(results), lost, now_s)
        usage_seen: set[Usage] = set()
        received = sorted((r for r in results if r.arrival_s is not None),
                          key=lambda r: r.arrival_s or 0.0)
        for r in received:
            assert r.arrival_s is not None
            self._acked.append((r.arrival_s, r.size_bytes))
            while self._acked and r.arrival_s - self._acked[0][0] > self.config.ack_window_s:
                self._acked.popleft()
            usage = self._add_to_group(r)
            if usage is not None:
                usage_seen.add(usage)
        usage = ("overuse" if "overuse" in usage_seen else
                 "underuse" if "underuse" in usage_seen else self.usage)
        self._rate_control(usage, now_s)
        return self.target_kbps()

    def _add_to_group(self, r: PacketResult) -> Usage | None:
        assert r.arrival_s is not None
        g = self._group
        if g is None or r.send_time_s - g.first_send_s > self.config.burst_s:
            usage: Usage | None = None
            if g is not None:
                self._queue_delay(g)
                prev = self._previous
                if prev is not None and g.last_arrival_s >= prev.last_arrival_s:
                    usage = self.detector.update(
                        (g.last_arrival_s - prev.last_arrival_s) * 1000.0,
                        (g.last_send_s - prev.last_send_s) * 1000.0, g.last_arrival_s)
                    if usage == "overuse" and self.queue_ms < self.config.queue_guard_ms:
                        usage = "normal"
                if self.queue_ms > self.config.queue_max_ms:
                    usage = "overuse"
                if usage is not None:
                    self.usage = usage
                self._previous = g
            self._group = _Group(r.send_time_s, r.send_time_s, r.arrival_s, r.size_bytes)
            return usage
        g.last_send_s = max(g.last_send_s, r.send_time_s)
        g.last_arrival_s = max(g.last_arrival_s, r.arrival_s)
        g.size_bytes += r.size_bytes
        return None

    def _queue_delay(self, g: _Group) -> None:
        # The clocks differ by a constant: the one-way delay above its recent minimum is
        # the time the group's last packet spent in queues.
        owd = g.last_arrival_s - g.last_send_s
        base = self._base
        while base and base[-1][1] >= owd:
            base.pop()  # a monotonic deque: its head is the window's minimum
        base.append((g.last_arrival_s, owd))
        while base[0][0] < g.last_arrival_s - self.config.base_delay_window_s:
            base.popleft()
        queued = (owd - base[0][1]) * 1000.0
        recent = self._recent
        while recent and recent[-1][1] >= queued:
            recent.pop()
        recent.append((g.last_arrival_s, queued))
        while recent[0][0] < g.last_arrival_s - self.config.standing_window_s:
            recent.popleft()
        self.queue_ms = recent[0][1]

    def _rate_control(self, usage: Usage, now_s: float) -> None:
        c = self.config
        acked = self.acked_kbps()
        last = self._last_change_s if self._last_change_s is not None else now_s
        dt = min(max(now_s - last, 0.0), 1.0)
        self._last_change_s = now_s
        if usage == "overuse":
            self.fast_start = False
            # One decrease per response time: the next feedback still shows the queue
            # that the previous decrease is draining.
            if now_s - self._last_decrease_s >= max(0.3, self.rtt_s + 0.1):
                base = acked if acked is not None else self.delay_kbps
                new = min(self.delay_kbps, c.beta * base)
                if acked is not None:
                    self.link_capacity_kbps = (acked if self.link_capacity_kbps is None
                                               else 0.95 * self.link_capacity_kbps + 0.05 * acked)
                self.delay_kbps = max(c.min_kbps, new)
                self._last_decrease_s = now_s
                self.overuses += 1
            self.state = "hold"
            return
        if usage == "underuse":
            self.state = "hold"  # queues draining: wait until they are empty
            return
        if self.state == "hold":
            self.state = "increase"
            return
        if self.fast_start:
            grow = c.fast_start_factor ** (dt / c.fast_start_step_s)
            new = self.delay_kbps * grow
        elif (self.link_capacity_kbps is not None
              and self.delay_kbps < 1.5 * self.link_capacity_kbps):
            # Near the last congestion point: about half a packet per response time (one
            # video frame's average packet; libwebrtc adds one, which kept a thin link's
            # queue at ~170 ms in the tests' simulated link).
            response_s = self.rtt_s + 0.1
            frame_kbit = self.delay_kbps / 15.0
            packet_kbit = frame_kbit / max(1.0, math.ceil(frame_kbit / 9.6))
            per_s = max(4.0, c.additive_packets * packet_kbit / response_s)
            new = self.delay_kbps + per_s * dt
        else:
            self.link_capacity_kbps = None
            new = self.delay_kbps * (1 + c.increase_per_s) ** dt
        if acked is not None:
            # Never grow on a rate that was not tried; never shrink for it either.
            new = min(new, max(self.delay_kbps, 1.5 * acked + 10.0))
        self.delay_kbps = min(c.max_kbps, new)

    def _loss(self, total: int, lost: int, now_s: float) -> None:
        c = self.config
        if self._loss_window_start_s is None:
            self._loss_window_start_s = now_s
        self._loss_window[0] += total
        self._loss_window[1] += lost
        if now_s - self._loss_window_start_s < c.loss_window_s or self._loss_window[0] < 10:
            return
        total, lost = self._loss_window
        self._loss_window = [0, 0]
        self._loss_window_start_s = now_s
        loss = lost / total
        self.loss_fraction = loss
        last = self._last_loss_update_s if self._last_loss_update_s is not None else now_s
        dt = min(max(now_s - last, 0.0), 2.0)
        self._last_loss_update_s = now_s
        current = self.target_kbps()
        if loss > c.high_loss:
            self.fast_start = False
            self.loss_kbps = max(c.min_kbps, current * (1 - loss / 2))
        elif loss < c.low_loss:
            if math.isfinite(self.loss_kbps):
                self.loss_kbps = self.loss_kbps * (1 + c.increase_per_s) ** dt
                if self.loss_kbps > 2 * self.delay_kbps:
                    self.loss_kbps = math.inf  # no longer the bound
