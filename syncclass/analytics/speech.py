"""Speech segments from per-frame voice decisions, turns and exchanges between sites.

A VAD (e.g. WebRTC's) decides per 20 ms frame whether it is voiced; single frames flip
within words and on noise. :class:`VadSmoother` turns those decisions into speech
segments: a segment starts once ``onset_frames`` of the last ``onset_window`` frames were
voiced (backdated to the first voiced frame of that window) and ends at the last voiced
frame once ``hangover_ms`` passed without one (pauses shorter than the hangover stay
inside the segment). Backdating the onset and ending at the last voiced frame keeps the
segment's length close to the talk it covers instead of biased by the detection delays.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

Segment = tuple[int, int]
"""Speech from ``start`` to ``end``, epoch ms."""


class VadSmoother:
    """Per-frame voice decisions (with their start times, epoch ms) → speech segments."""

    def __init__(self, frame_ms: int = 20, onset_frames: int = 3, onset_window: int = 5,
                 hangover_ms: int = 300) -> None:
        if not 0 < onset_frames <= onset_window:
            raise ValueError("need 0 < onset_frames <= onset_window")
        if frame_ms <= 0 or hangover_ms < 0:
            raise ValueError("frame_ms must be > 0 and hangover_ms >= 0")
        self.frame_ms = frame_ms
        self.onset_frames = onset_frames
        self.hangover_ms = hangover_ms
        self._window: deque[tuple[int, bool]] = deque(maxlen=onset_window)
        self._start: int | None = None
        self._last_voiced_end = 0
        self.segments: list[Segment] = []
        """Closed segments, in order."""

    @property
    def speaking(self) -> bool:
        return self._start is not None

    @property
    def start_ms(self) -> int | None:
        """Start of the open segment (its first voiced frame, epoch ms), or None."""
        return self._start

    @property
    def last_voiced_end_ms(self) -> int:
        """End of the last voiced frame of the open or the last closed segment, epoch ms
        (0 before any speech)."""
        return self._last_voiced_end

    def push(self, ts_ms: int, voiced: bool) -> Segment | None:
        """Feed one frame starting at ``ts_ms``; returns a segment when one closes."""
        closed: Segment | None = None
        if self._start is None:
            self._window.append((ts_ms, voiced))
            if sum(v for _, v in self._window) >= self.onset_frames:
                self._start = next(t for t, v in self._window if v)
                self._last_voiced_end = max(t for t, v in self._window if v) + self.frame_ms
                self._window.clear()
        elif voiced and ts_ms - self._last_voiced_end < self.hangover_ms:
            self._last_voiced_end = ts_ms + self.frame_ms
        elif voiced:
            # A gap in the input (lost audio) longer than the hangover ends the segment.
            closed = (self._start, self._last_voiced_end)
            self.segments.append(closed)
            self._start = None
            self._window.clear()
            self._window.append((ts_ms, voiced))
        elif ts_ms + self.frame_ms - self._last_voiced_end >= self.hangover_ms:
            closed = (self._start, self._last_voiced_end)
            self.segments.append(closed)
            self._start = None
        return closed

    def flush(self) -> Segment | None:
        """Close an open segment (end of input)."""
        if self._start is None:
            return None
        closed = (self._start, self._last_voiced_end)
        self.segments.append(closed)
        self._start = None
        self._window.clear()
        return closed

    def snapshot(self) -> list[Segment]:
        """Closed segments plus the open one provisionally ended at its last voiced frame."""
        if self._start is None:
            return list(self.segments)
        return [*self.segments, (self._start, self._last_voiced_end)]


def talk_ms(segments: list[Segment]) -> int:
    """Total speech, ms (segments of one site do not overlap)."""
    return sum(max(0, e - s) for s, e in segments)


def merge_turns(segments: list[Segment], gap_ms: int) -> list[Segment]:
    """A site's speaking turns: its segments with pauses shorter than ``gap_ms`` joined."""
    out: list[list[int]] = []
    for s, e in sorted(segments):
        if out and s - out[-1][1] < gap_ms:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(a, b) for a, b in out]


@dataclass(frozen=True)
class Exchange:
    """A receiving site answered the main site: it began a turn within the window after
    (or while) the main site's turn ended."""

    site: str
    main_turn_start_ms: int
    main_turn_end_ms: int
    response_start_ms: int
    response_latency_ms: int
    """Response start minus the main turn's end, ms (0 when it started before the end)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_exchanges(main_turns: list[Segment], site_turns: dict[str, list[Segment]],
                   window_ms: int) -> list[Exchange]:
    """Exchanges between the main site and each receiving site: for every main turn and
    site, the site's first turn starting after the main turn started and at most
    ``window_ms`` after it ended."""
    out: list[Exchange] = []
    for ms, me in main_turns:
        for site, turns in sorted(site_turns.items()):
            for ts, _te in sorted(turns):
                if ms < ts <= me + window_ms:
                    out.append(Exchange(site, ms, me, ts, max(0, ts - me)))
                    break
    out.sort(key=lambda x: (x.response_start_ms, x.site))
    return out
