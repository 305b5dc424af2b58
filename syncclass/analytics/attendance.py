"""Attendance of one classroom in one lesson: sessions merged across reconnects.

A *session* is one stretch during which a classroom's media reached the mixer (from its
peer connection reaching ``connected`` to its leaving, for whatever ``reason``). A
classroom that drops and reconnects has several sessions; its presence is their union.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class AttendanceSession:
    join_ms: int
    """Epoch ms when media started flowing."""
    leave_ms: int
    """Epoch ms when it stopped."""
    reason: str
    """Why it ended: ``leave``, ``disconnected``, ``peer_failed``, ``lesson_ended``, ..."""

    def __post_init__(self) -> None:
        if self.leave_ms < self.join_ms:
            raise ValueError(f"session leaves ({self.leave_ms}) before it joins ({self.join_ms})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Interval = tuple[int, int]


def union(intervals: list[Interval]) -> list[Interval]:
    """Sorted, non-overlapping union of ``[start, end)`` intervals (touching ones merge)."""
    out: list[list[int]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def clip(intervals: list[Interval], lo: int, hi: int) -> list[Interval]:
    """``intervals`` cut to ``[lo, hi)``; empty pieces dropped."""
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


def total_ms(intervals: list[Interval]) -> int:
    return sum(b - a for a, b in union(intervals))


@dataclass
class AttendanceTracker:
    """Open and closed sessions per classroom, fed by join/leave events (epoch ms)."""

    sessions: dict[str, list[AttendanceSession]] = field(default_factory=dict)
    _open: dict[str, int] = field(default_factory=dict)

    def join(self, classroom_id: str, ts_ms: int) -> None:
        """Media of ``classroom_id`` started flowing; a second join without a leave is
        ignored (the first one stands)."""
        self.sessions.setdefault(classroom_id, [])
        self._open.setdefault(classroom_id, ts_ms)

    def leave(self, classroom_id: str, ts_ms: int, reason: str) -> None:
        """Media of ``classroom_id`` stopped; a leave without a join is ignored."""
        start = self._open.pop(classroom_id, None)
        if start is None:
            return
        self.sessions.setdefault(classroom_id, []).append(
            AttendanceSession(start, max(start, ts_ms), reason)
        )

    def is_present(self, classroom_id: str) -> bool:
        return classroom_id in self._open

    def open_sessions(self) -> dict[str, int]:
        """Join time (epoch ms) of each classroom whose session is still open."""
        return dict(self._open)

    def close(self, ts_ms: int, reason: str = "lesson_ended") -> None:
        """End every open session at ``ts_ms`` (the lesson ended)."""
        for cid in list(self._open):
            self.leave(cid, ts_ms, reason)

    def snapshot(self, ts_ms: int) -> dict[str, list[AttendanceSession]]:
        """Sessions per classroom with open ones provisionally ended at ``ts_ms``."""
        out = {cid: list(s) for cid, s in self.sessions.items()}
        for cid, start in self._open.items():
            out.setdefault(cid, []).append(AttendanceSession(start, max(start, ts_ms), "open"))
        return out


@dataclass(frozen=True)
class AttendanceSummary:
    present_s: float
    """Time present within the lesson (union of sessions), seconds."""
    late_s: float
    """First join minus the expected start (the later of the timetable's start and the
    lesson's actual start), seconds, ≥ 0; the whole expected span if never joined."""
    early_leave_s: float
    """The lesson's end minus the last leave, seconds, ≥ 0."""
    attendance_ratio: float
    """``present_s`` over the lesson's length, 0..1."""
    reconnects: int
    """Sessions after the first one."""
    first_join_ms: int | None
    last_leave_ms: int | None
    intervals: list[Interval]
    """Merged presence within the lesson, epoch ms ``[start, end)``."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["intervals"] = [list(i) for i in self.intervals]
        return d


def summarize(
    sessions: list[AttendanceSession],
    lesson_start_ms: int,
    lesson_end_ms: int,
    expected_start_ms: int | None = None,
) -> AttendanceSummary:
    """Attendance of one classroom in a lesson ``[lesson_start_ms, lesson_end_ms)``.

    ``expected_start_ms`` is the timetable's start when the lesson is on the timetable; a
    classroom cannot join before the lesson starts, so lateness counts from the later of
    the two.
    """
    if lesson_end_ms < lesson_start_ms:
        raise ValueError("lesson ends before it starts")
    span = lesson_end_ms - lesson_start_ms
    intervals = union(clip([(s.join_ms, s.leave_ms) for s in sessions],
                           lesson_start_ms, lesson_end_ms))
    present = total_ms(intervals)
    expected = max(lesson_start_ms, expected_start_ms or lesson_start_ms)
    first: int | None = None
    last: int | None = None
    if intervals:
        first, last = intervals[0][0], intervals[-1][1]
        late = max(0, first - expected)
        early = max(0, lesson_end_ms - last)
    else:
        late = max(0, lesson_end_ms - expected)
        early = 0
    return AttendanceSummary(
        present_s=round(present / 1000, 3),
        late_s=round(late / 1000, 3),
        early_leave_s=round(early / 1000, 3),
        attendance_ratio=round(present / span, 4) if span > 0 else 0.0,
        reconnects=max(0, len(sessions) - 1),
        first_join_ms=first,
        last_leave_ms=last,
        intervals=intervals,
    )
