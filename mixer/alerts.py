"""Alerts: a classroom that stays over a threshold, or out of its live lesson, for
``ops.alert_hold_s`` raises an ``alert`` event (and a warning log line); when it recovers a
``resolved`` one follows. Webhooks deliver them (see :mod:`mixer.webhooks`).

:class:`AlertEngine` is driven by health samples and takes the time as an argument, so it is
tested without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncclass.config import OpsThresholds

from .netstats import ClassroomHealth, MixerHealth

logger = logging.getLogger(__name__)

KIND_OF_PROBLEM = {
    "latency_red": "latency",
    "latency_amber": "latency",
    "loss": "loss",
    "frozen": "frozen",
    "offline": "dropout",
    "not_in_lesson": "dropout",
    "peer_failed": "dropout",
    "peer_closed": "dropout",
}
"""Problems (see :func:`mixer.netstats.grade`) that raise alerts, grouped into kinds. Jitter
and a low camera frame rate only colour the dashboard amber: on their own they do not
spoil a lesson, and alerting on them drowned the real alerts in tests."""

AlertEmitter = Callable[[str | None, str, dict[str, Any]], None]
"""(lesson_id, classroom_id, data) → emit an ``alert`` event."""


@dataclass
class _Condition:
    since_s: float
    since_ms: int
    raised: bool = False
    severity: str = "amber"


class AlertEngine:
    """Turns successive :class:`ClassroomHealth` samples into firing/resolved alerts."""

    def __init__(self, thresholds: OpsThresholds, hold_s: float, emit: AlertEmitter) -> None:
        self.thresholds = thresholds
        self.hold_s = hold_s
        self._emit = emit
        self._open: dict[tuple[str, str], _Condition] = {}
        self._lesson: dict[str, str | None] = {}
        self.raised = 0
        self.resolved = 0

    @property
    def firing(self) -> list[tuple[str, str]]:
        """(classroom_id, kind) of alerts raised and not yet resolved."""
        return sorted(k for k, c in self._open.items() if c.raised)

    def update(self, now_s: float, healths: dict[str, ClassroomHealth]) -> None:
        """Feed one sample taken at monotonic ``now_s`` (seconds)."""
        for cid, h in healths.items():
            kinds: dict[str, str] = {}
            for problem in h.problems:
                kind = KIND_OF_PROBLEM.get(problem)
                if kind is None:
                    continue
                severity = "amber" if problem in ("latency_amber", "jitter", "low_fps") else "red"
                if kinds.get(kind) != "red":
                    kinds[kind] = severity
            lesson_id = h.lesson_id or self._lesson.get(cid)
            for kind, severity in kinds.items():
                key = (cid, kind)
                cond = self._open.get(key)
                if cond is None:
                    cond = self._open[key] = _Condition(now_s, h.ts_ms, severity=severity)
                if severity == "red":
                    cond.severity = "red"
                if not cond.raised and now_s - cond.since_s >= self.hold_s:
                    cond.raised = True
                    self.raised += 1
                    self._fire(lesson_id, h, kind, cond, "firing")
            for key in [k for k in self._open if k[0] == cid and k[1] not in kinds]:
                cond = self._open.pop(key)
                if cond.raised:
                    self.resolved += 1
                    self._fire(lesson_id, h, key[1], cond, "resolved")
            if h.lesson_id:
                self._lesson[cid] = h.lesson_id

    def on_sample(self, healths: dict[str, ClassroomHealth], mixer: MixerHealth) -> None:
        """A :attr:`NetStatsCollector.on_sample` callback (monotonic clock)."""
        self.update(time.monotonic(), healths)

    def _fire(self, lesson_id: str | None, h: ClassroomHealth, kind: str, cond: _Condition,
              state: str) -> None:
        value, threshold, unit = self._value(h, kind)
        held = (h.ts_ms - cond.since_ms) / 1000.0
        message = (f"classroom {h.classroom_id}: {kind} {state}"
                   + (f" ({value:g} {unit}, threshold {threshold:g} {unit})"
                      if value is not None and threshold is not None else "")
                   + f" for {held:.0f} s")
        data: dict[str, Any] = {
            "kind": kind,
            "state": state,
            "severity": cond.severity,
            "value": value,
            "threshold": threshold,
            "unit": unit,
            "since_ms": cond.since_ms,
            "held_s": round(held, 1),
            "classroom_state": h.state,
            "message": message,
        }
        log = logger.warning if state == "firing" else logger.info
        log("ALERT %s", message, extra={"lesson_id": lesson_id, "classroom_id": h.classroom_id,
                                        "alert": data})
        self._emit(lesson_id, h.classroom_id, data)

    def _value(self, h: ClassroomHealth, kind: str) -> tuple[float | None, float | None, str]:
        t = self.thresholds
        if kind == "latency":
            red = h.latency_ms is not None and h.latency_ms > t.latency_red_ms
            return h.latency_ms, (t.latency_red_ms if red else t.latency_amber_ms), "ms"
        if kind == "loss":
            return h.loss_percent, t.loss_percent, "%"
        if kind == "jitter":
            return h.jitter_ms, t.jitter_ms, "ms"
        if kind == "low_fps":
            return h.fps_in, t.min_fps, "fps"
        return None, None, ""
