"""S-T analysis (S-T分析法) of a lesson from who spoke when.

The classic method samples the lesson at a fixed interval (often 30 s) and codes each
sample T (teacher behaviour) or S (everything else: pupils speaking, practising,
thinking, silence). Our rule, from audio only, over windows aligned to multiples of the
interval on the epoch clock (a partial first or last window is dropped):

- **T** when the main classroom's speech covers at least half of the window and at least
  as much as any receiving classroom's: the main classroom's microphone is taken as the
  teacher.
- **S** otherwise: receiving classrooms speaking, silence, practice.

Limits: pupils of the main classroom speaking into its microphone count as T, and a
teacher writing silently on the board counts as S.

Rt = Nt / N; Ch = (g − 1) / N with g the number of runs of equal codes. Lesson type:
练习型 (practice) Rt ≤ 0.3; 讲授型 (lecture) Rt ≥ 0.7; 对话型 (dialogue) Ch ≥ 0.4; else
混合型 (mixed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .attendance import clip, total_ms, union
from .speech import Segment

LessonType = Literal["练习型", "讲授型", "对话型", "混合型"]
LESSON_TYPE_EN: dict[str, str] = {
    "练习型": "practice",
    "讲授型": "lecture",
    "对话型": "dialogue",
    "混合型": "mixed",
}


def lesson_type(rt: float, ch: float) -> LessonType:
    """The S-T lesson type from Rt and Ch (thresholds of the method)."""
    if rt <= 0.3:
        return "练习型"
    if rt >= 0.7:
        return "讲授型"
    if ch >= 0.4:
        return "对话型"
    return "混合型"


@dataclass(frozen=True)
class STResult:
    interval_s: float
    first_sample_ms: int
    """Start of the first window, epoch ms."""
    codes: str
    """One letter per sample, ``T`` or ``S``."""
    n: int
    nt: int
    rt: float
    g: int
    ch: float
    lesson_type: str
    lesson_type_en: str
    curve: list[tuple[int, int]] = field(default_factory=list)
    """The S-T curve: cumulative (T count, S count) after each sample, from (0, 0)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["curve"] = [list(p) for p in self.curve]
        return d


def code_samples(main: list[Segment], receiving: dict[str, list[Segment]], start_ms: int,
                 end_ms: int, interval_ms: int) -> tuple[int, str]:
    """(first window start, codes) for the whole windows of ``interval_ms`` inside
    ``[start_ms, end_ms)``, aligned to multiples of ``interval_ms`` on the epoch clock."""
    if interval_ms <= 0:
        raise ValueError("interval must be > 0")
    first = -(-start_ms // interval_ms) * interval_ms
    main_u = union(list(main))
    rec_u = {cid: union(list(s)) for cid, s in receiving.items()}
    codes = []
    t = first
    while t + interval_ms <= end_ms:
        m = total_ms(clip(main_u, t, t + interval_ms))
        r = max((total_ms(clip(s, t, t + interval_ms)) for s in rec_u.values()), default=0)
        codes.append("T" if 2 * m >= interval_ms and m >= r else "S")
        t += interval_ms
    return first, "".join(codes)


def st_from_codes(codes: str, interval_s: float, first_sample_ms: int) -> STResult:
    """Rt, Ch, runs, type and curve of a T/S code string."""
    if set(codes) - {"T", "S"}:
        raise ValueError("codes must be 'T' or 'S'")
    n = len(codes)
    nt = codes.count("T")
    g = sum(1 for i, c in enumerate(codes) if i == 0 or c != codes[i - 1])
    rt = nt / n if n else 0.0
    ch = (g - 1) / n if n else 0.0
    kind = lesson_type(rt, ch) if n else "混合型"
    curve = [(0, 0)]
    for c in codes:
        t, s = curve[-1]
        curve.append((t + 1, s) if c == "T" else (t, s + 1))
    return STResult(interval_s, first_sample_ms, codes, n, nt, round(rt, 4), g, round(ch, 4),
                    kind, LESSON_TYPE_EN[kind], curve)


def st_analysis(main: list[Segment], receiving: dict[str, list[Segment]], start_ms: int,
                end_ms: int, interval_s: float) -> STResult:
    """S-T analysis of a lesson ``[start_ms, end_ms)`` from the speech segments of its
    main classroom and of each receiving classroom (epoch ms)."""
    interval_ms = round(interval_s * 1000)
    first, codes = code_samples(main, receiving, start_ms, end_ms, interval_ms)
    return st_from_codes(codes, interval_s, first)
