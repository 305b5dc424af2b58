"""Analytics reducers (伴随式大数据), pure and I/O-free: attendance intervals, voice activity
smoothing, turns and exchanges, S-T analysis (S-T分析法). The mixer feeds them
(:mod:`mixer.analytics`); times are epoch milliseconds throughout."""

from .attendance import AttendanceSession, AttendanceSummary, AttendanceTracker, summarize
from .speech import Exchange, VadSmoother, find_exchanges, merge_turns, talk_ms
from .st import STResult, lesson_type, st_analysis

__all__ = [
    "AttendanceSession",
    "AttendanceSummary",
    "AttendanceTracker",
    "Exchange",
    "STResult",
    "VadSmoother",
    "find_exchanges",
    "lesson_type",
    "merge_turns",
    "st_analysis",
    "summarize",
    "talk_ms",
]
