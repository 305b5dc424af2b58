"""Automatic directing (自动导播) of a lesson's composed view: which source is featured.

A pure reducer, no I/O: the mixer feeds it, every composition tick, the lesson time, who
is speaking (the analytics' per-site voice activity), whether courseware is shown and the
teacher's manual choice (导播 buttons), and lays out the view from the resulting
:class:`Shot`. Rules, as in the commercial 录播/同步课堂 products (courseware > teacher >
the answering classroom):

* the *active* source is the teacher, or a receiving classroom that has spoken for at
  least :attr:`DirectingRules.onset_s` (1 s) while the teacher is silent: it answers a
  question (the teacher talking over it keeps the teacher featured);
* it goes back to the teacher once that classroom has been silent for
  :attr:`DirectingRules.release_s` (0.7 s), or sooner when the teacher has spoken for
  :attr:`DirectingRules.takeback_s` while it is silent (the teacher takes the answer
  up); no automatic switch comes sooner than
  :attr:`DirectingRules.min_hold_s` after the previous one, so the picture does not
  flicker between sources;
* while courseware is shown it is the large picture and the active source is its
  picture-in-picture; otherwise the active source is the large picture;
* a manual choice (a classroom, the teacher or the courseware) holds until the teacher
  gives directing back (``auto``).

Times of speech are the voice detector's own (:class:`Heard`: the first and last voiced
frame on the capture clock) when the caller has them: a detector says "speaking" a few
frames after the speech starts and "silent" only after its hangover (300 ms), and the
audio reaches it after the network's delay, so counting the onset and the release from
when its flag changed would add those delays to every switch.

Every change of shot is recorded as a :class:`Switch` with its lesson time and reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

COURSEWARE = "@courseware"
"""Source id of the main classroom's courseware (a classroom id can never contain '@')."""

AUTO = "auto"
"""Manual choice meaning: give directing back to the rules."""

Reason = Literal["start", "speech", "silence", "courseware", "manual", "auto", "left"]


@dataclass(frozen=True)
class DirectingRules:
    """Timing of the automatic switches, in seconds of lesson time."""

    onset_s: float = 1.0
    """A receiving classroom speaking this long (without a pause longer than the voice
    detector's hangover) is featured."""
    release_s: float = 0.7
    """A featured classroom silent this long (from its last voiced frame) hands the
    picture back to the teacher. After an answer nobody knows it has ended until the
    silence has lasted, so every answer costs the onset plus this before the picture is
    the teacher's again, and a pause inside an answer longer than this cuts to the
    teacher: the picture cannot come back sooner after an answer than the longest pause
    it bridges. 0.7 s returns 0.3 s sooner than 1 s after each answer and keeps pauses
    of up to ~0.75 s inside the answer (WebRTC's voice detector hears ~0.1 s more speech
    than there is); a 0.8 s hesitation measured 0.72 s and was cut
    (``benchmarks/courseware.py --script hesitant``). ``media.directing.release_s: 1.0``
    where pupils hesitate longer."""
    min_hold_s: float = 2.0
    """No automatic switch sooner than this after the previous switch."""
    pause_s: float = 0.4
    """A pause shorter than this (between words, or a frame the voice detector missed)
    does not end a speech stretch."""
    takeback_s: float = 0.5
    """The teacher speaking this long while the featured classroom is silent brings the
    picture back to the teacher before ``release_s`` has passed."""

    def __post_init__(self) -> None:
        for name in ("onset_s", "release_s", "min_hold_s", "pause_s", "takeback_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"DirectingRules.{name} must not be negative")


@dataclass(frozen=True)
class Shot:
    """What a directed view shows."""

    active: str
    """The featured person source: the teacher's classroom or a receiving classroom."""
    courseware: bool
    """Whether the courseware is the large picture (``active`` is then its
    picture-in-picture)."""

    @property
    def large(self) -> str:
        """Source id of the large picture."""
        return COURSEWARE if self.courseware else self.active


@dataclass(frozen=True)
class Switch:
    """One change of shot."""

    t_s: float
    """Lesson time of the switch, seconds."""
    shot: Shot
    reason: Reason
    source: str | None = None
    """The classroom whose speech or silence caused it, if any."""

    def to_dict(self) -> dict[str, Any]:
        return {"t_s": round(self.t_s, 3), "active": self.shot.active,
                "courseware": self.shot.courseware, "large": self.shot.large,
                "reason": self.reason, "source": self.source}


@dataclass(frozen=True)
class Heard:
    """What a source's voice detector knows of its speech, in lesson time (s)."""

    start_s: float
    """Start of its current speech stretch (the first voiced frame), or of its last one."""
    last_voiced_s: float
    """End of its last voiced frame."""


@dataclass
class _Voice:
    since: float | None = None
    """Start of the current speech stretch, or None while silent."""
    silent_since: float | None = None
    """When it last stopped speaking."""
    last_since: float | None = None
    """Start of the last speech stretch (resumed after a short pause)."""


@dataclass
class Director:
    """The reducer: call :meth:`step` with increasing lesson times."""

    teacher: str
    """The main classroom's id: the default active source."""
    rules: DirectingRules = field(default_factory=DirectingRules)
    switches: list[Switch] = field(default_factory=list)
    """Every change of shot so far, the first being the lesson's start."""
    _voices: dict[str, _Voice] = field(default_factory=dict)
    _override: str | None = None
    _fresh: bool = False
    """Directing was just given back: decide afresh, without the hold."""
    _shot: Shot | None = None
    _last_switch_s: float = float("-inf")

    @property
    def shot(self) -> Shot:
        """The current shot (the teacher before the first step)."""
        return self._shot or Shot(self.teacher, False)

    @property
    def override(self) -> str | None:
        """The manual choice in force (a source id or :data:`COURSEWARE`), or None."""
        return self._override

    def set_override(self, choice: str | None) -> None:
        """The teacher's 导播 button: a source id, :data:`COURSEWARE`, or None /
        :data:`AUTO` for automatic directing. Takes effect at the next :meth:`step`."""
        new = None if choice in (None, AUTO) else choice
        if self._override is not None and new is None:
            self._fresh = True
        self._override = new

    def step(self, t_s: float, speaking: Iterable[str], courseware: bool,
             present: Iterable[str] | None = None,
             heard: Mapping[str, Heard] | None = None) -> Switch | None:
        """Advance to lesson time ``t_s`` (seconds): ``speaking`` are the sources whose
        voice detector says speech now, ``courseware`` whether courseware is available,
        ``present`` the receiving classrooms in the lesson (None: any), ``heard`` the
        detectors' times of speech per source (None, or a source missing: the times
        ``speaking`` changed at). Returns the switch made now, if any."""
        talking = set(speaking)
        heard = heard or {}
        for cid in talking | set(self._voices):
            voice = self._voices.setdefault(cid, _Voice())
            times = heard.get(cid)
            if cid in talking and voice.since is None:
                start = t_s if times is None else min(t_s, times.start_s)
                resumed = (voice.silent_since is not None and voice.last_since is not None
                           and start - voice.silent_since < self.rules.pause_s)
                voice.since = voice.last_since if resumed else start
                voice.silent_since = None
                voice.last_since = voice.since
            elif cid not in talking and voice.since is not None:
                end = t_s if times is None else max(voice.since, min(t_s, times.last_voiced_s))
                voice.since, voice.silent_since = None, end
        target, reason, source = self._decide(t_s, courseware,
                                              None if present is None else set(present))
        if self._shot is None:
            return self._switch(t_s, target, "start", None)
        if target != self._shot:
            return self._switch(t_s, target, reason, source)
        return None

    def _decide(self, t_s: float, courseware: bool,
                present: set[str] | None) -> tuple[Shot, Reason, str | None]:
        """The shot the rules want now, with the reason and the classroom behind it."""
        current = self.shot
        override = self._override
        if override is not None and (present is None or override in present
                                     or override in (self.teacher, COURSEWARE)):
            if override == COURSEWARE:
                return Shot(self.teacher, courseware), "manual", None
            return Shot(override, False), "manual", None
        after_manual, self._fresh = self._fresh, False
        held = after_manual or t_s - self._last_switch_s >= self.rules.min_hold_s
        active, source = current.active, None
        reason: Reason = "courseware"
        if after_manual:
            active = self.teacher  # directing given back: decide afresh
        elif active != self.teacher and present is not None and active not in present:
            return Shot(self.teacher, courseware), "left", active
        if active != self.teacher and held:
            voice = self._voices.get(active)
            if voice is None or (voice.since is None and voice.silent_since is not None
                                 and t_s - voice.silent_since
                                 >= max(self.rules.release_s, self.rules.pause_s)):
                active, reason, source = self.teacher, "silence", active
            elif (voice.since is None and voice.silent_since is not None
                  and t_s - voice.silent_since >= self.rules.pause_s
                  and self._teacher_took_back(t_s)):
                active, reason, source = self.teacher, "speech", self.teacher
        if active == self.teacher and held:
            speaker = self._speaker(t_s, present)
            if speaker is not None:
                active, reason, source = speaker, "speech", speaker
        if after_manual:
            reason = "auto"
        return Shot(active, courseware), reason, source

    def _teacher_took_back(self, t_s: float) -> bool:
        """The teacher has been speaking for at least takeback_s (the featured classroom
        having paused longer than pause_s: the teacher takes its answer up; a teacher
        speaking over the answer does not)."""
        teacher = self._voices.get(self.teacher)
        return (teacher is not None and teacher.since is not None
                and t_s - teacher.since >= self.rules.takeback_s)

    def _speaker(self, t_s: float, present: set[str] | None) -> str | None:
        """The receiving classroom that has spoken longest, if for at least onset_s, while
        the teacher is silent (the teacher comes before an answering classroom; this also
        keeps a lesson of continuous test tones on the teacher)."""
        teacher = self._voices.get(self.teacher)
        if teacher is not None and (teacher.since is not None or (
                teacher.silent_since is not None
                and t_s - teacher.silent_since < self.rules.pause_s)):
            return None
        best: tuple[float, str] | None = None
        for cid, voice in self._voices.items():
            if cid == self.teacher or voice.since is None:
                continue
            if present is not None and cid not in present:
                continue
            if t_s - voice.since >= self.rules.onset_s and (best is None or voice.since < best[0]):
                best = (voice.since, cid)
        return None if best is None else best[1]

    def _switch(self, t_s: float, shot: Shot, reason: Reason, source: str | None) -> Switch:
        old = self._shot
        self._shot = shot
        self._last_switch_s = t_s
        switch = Switch(t_s, shot, reason, source)
        self.switches.append(switch)
        logger.debug("directing %.2f s: %s -> %s (%s)", t_s, old, shot, reason)
        return switch


def agreement(truth: list[tuple[float, str]], switches: list[Switch], end_s: float,
              step_s: float = 0.1) -> float:
    """Share (0..1) of the time from 0 to ``end_s`` at which the featured (active) source
    of ``switches`` equals the ``truth`` script: a list of (start time s, source),
    sorted, each holding until the next."""
    if not truth or not switches or end_s <= 0:
        return 0.0
    hits = total = 0
    t = 0.0
    while t < end_s:
        want = _at(truth, t)
        got = None
        for sw in switches:
            if sw.t_s <= t:
                got = sw.shot.active
        total += 1
        hits += got == want
        t += step_s
    return hits / total


def _at(script: list[tuple[float, str]], t: float) -> str | None:
    value = None
    for start, source in script:
        if start <= t:
            value = source
    return value


def onset_delays(onsets: list[tuple[float, str]], switches: list[Switch],
                 window_s: float = 5.0) -> list[float | None]:
    """For each (speech onset time s, classroom): seconds until the first switch that
    features that classroom, or None if none came within ``window_s``."""
    out: list[float | None] = []
    for t0, cid in onsets:
        delay = next((sw.t_s - t0 for sw in switches
                      if sw.shot.active == cid and t0 <= sw.t_s <= t0 + window_s), None)
        out.append(delay)
    return out
