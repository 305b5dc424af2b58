"""A lesson of the sample county with known analytics data, for report tests and the
analytics benchmark."""

from __future__ import annotations

import datetime as dt

from mixer.report import LessonData
from syncclass.analytics import AttendanceSession
from syncclass.lesson import Lesson

__all__ = ["MAIN", "A", "B", "data_for", "lesson_at"]

MAIN, A, B = "main-3-1", "hetou-3", "shanping-3"
"""The main classroom and the two receiving classrooms of the math pairing."""


def lesson_at(start: dt.datetime, minutes: float = 40, subject: str = "数学",
              n: int = 1) -> Lesson:
    """An ended lesson of the sample county's math pairing starting at ``start``."""
    s = int(start.timestamp() * 1000)
    return Lesson(f"math-g3-{n}", "shiyan-rural-math", MAIN, [A, B], subject, "三年级", "王老师",
                  "math-g3", "ended", s, s + int(minutes * 60_000))


def data_for(lesson: Lesson) -> LessonData:
    """Attendance, speech, hands, head counts and network samples of ``lesson`` with known
    figures (the main classroom speaks 2 minutes, ``A`` arrives 2 minutes late, ``B``
    drops out once and leaves 5 minutes early)."""
    s = lesson.started_ms
    e = lesson.ended_ms
    assert s is not None and e is not None
    return LessonData(
        lesson=lesson,
        sessions={MAIN: [AttendanceSession(s + 500, e, "lesson_ended")],
                  A: [AttendanceSession(s + 120_000, e, "lesson_ended")],
                  B: [AttendanceSession(s + 1000, s + 600_000, "disconnected"),
                      AttendanceSession(s + 660_000, e - 300_000, "leave")]},
        speech={MAIN: [(s + 10_000, s + 70_000), (s + 100_000, s + 160_000)],
                A: [(s + 72_000, s + 80_000)], B: [(s + 161_000, s + 170_000)]},
        hands={A: [s + 60_000, s + 90_000]},
        heads={A: [(s + 5000, 12), (s + 15_000, 14), (s + 25_000, 13)]},
        network={A: [{"ts_ms": s + 1000 * i, "rtt_ms": 40.0 + i, "latency_ms": 180.0,
                      "bitrate_kbps": 1400.0, "fps": 15.0, "freezes": 0, "jitter_ms": 3.0,
                      "loss_percent": 0.0} for i in range(10)]},
    )
