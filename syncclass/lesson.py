"""Lesson lifecycle: which lesson a classroom belongs to and its state (pure, no I/O).

A lesson belongs to a pairing (结对): its main classroom starts and ends it; the paired
receiving classrooms join while it is live. States: ``idle`` (not started) → ``live`` →
``ended``. One live lesson per pairing at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .config import CountyConfig, TimetableEntry
from .errors import AuthError, InvalidStateError
from .protocol import LessonInfo, LessonStateName

logger = logging.getLogger(__name__)


@dataclass
class Lesson:
    lesson_id: str
    pairing_id: str
    main: str
    receiving: list[str]
    subject: str
    grade: str
    teacher: str
    timetable_id: str | None
    state: LessonStateName = "idle"
    started_ms: int | None = None
    ended_ms: int | None = None

    @property
    def classrooms(self) -> list[str]:
        return [self.main, *self.receiving]

    def info(self) -> LessonInfo:
        return LessonInfo(
            lesson_id=self.lesson_id,
            state=self.state,
            pairing_id=self.pairing_id,
            main=self.main,
            receiving=list(self.receiving),
            subject=self.subject,
            grade=self.grade,
            teacher=self.teacher,
            timetable_id=self.timetable_id,
            started_ms=self.started_ms,
            ended_ms=self.ended_ms,
        )


def pick_timetable_entry(
    config: CountyConfig, pairing_id: str, now: dt.datetime, timetable_id: str | None = None
) -> TimetableEntry | None:
    """The timetable entry a lesson started ``now`` belongs to: the one named, else the
    pairing's entry today whose start is nearest to ``now``, else any of the pairing's."""
    entries = [t for t in config.timetable if t.pairing == pairing_id]
    if timetable_id is not None:
        for t in entries:
            if t.id == timetable_id:
                return t
        raise InvalidStateError(f"timetable entry {timetable_id!r} is not one of this pairing's")
    if not entries:
        return None
    today = [t for t in entries if now.isoweekday() in t.weekdays] or entries

    def distance(t: TimetableEntry) -> float:
        start = dt.datetime.combine(now.date(), t.start, tzinfo=now.tzinfo)
        return abs((now - start).total_seconds())

    return min(today, key=distance)


@dataclass
class LessonRegistry:
    """In-process registry of lessons, one slot per pairing."""

    config: CountyConfig
    clock_ms: Callable[[], int]
    on_change: list[Callable[[Lesson], None]] = field(default_factory=list)
    _lessons: dict[str, Lesson] = field(default_factory=dict)
    _counter: int = 0

    def lesson_of(self, classroom_id: str) -> Lesson | None:
        """The current (live, else most recent) lesson of the classroom's pairing."""
        for p in self.config.pairings:
            if classroom_id == p.main or classroom_id in p.receiving:
                lesson = self._lessons.get(p.id)
                if lesson is not None:
                    return lesson
        return None

    def live_lessons(self) -> list[Lesson]:
        return [x for x in self._lessons.values() if x.state == "live"]

    def all_lessons(self) -> list[Lesson]:
        return list(self._lessons.values())

    def start(self, classroom_id: str, timetable_id: str | None = None) -> Lesson:
        """The main classroom ``classroom_id`` starts its lesson."""
        room = self.config.classroom(classroom_id)
        if room.role != "main":
            raise AuthError("not_allowed", f"classroom {classroom_id!r} is not a main classroom")
        pairing = self.config.pairing_of_main(classroom_id)
        if pairing is None:
            raise AuthError("not_paired", f"classroom {classroom_id!r} is in no pairing")
        current = self._lessons.get(pairing.id)
        if current is not None and current.state == "live":
            raise InvalidStateError(f'Cannot start a lesson in state "{current.state}"')
        now_ms = self.clock_ms()
        now = dt.datetime.fromtimestamp(now_ms / 1000).astimezone()
        entry = pick_timetable_entry(self.config, pairing.id, now, timetable_id)
        self._counter += 1
        lesson = Lesson(
            lesson_id=f"{entry.id if entry else pairing.id}-{now:%Y%m%d-%H%M%S}-{self._counter}",
            pairing_id=pairing.id,
            main=pairing.main,
            receiving=list(pairing.receiving),
            subject=entry.subject if entry else "",
            grade=entry.grade if entry else "",
            teacher=entry.teacher if entry else "",
            timetable_id=entry.id if entry else None,
            state="live",
            started_ms=now_ms,
        )
        self._lessons[pairing.id] = lesson
        logger.info("lesson %s: idle -> live (started by %s)", lesson.lesson_id, classroom_id)
        self._emit(lesson)
        return lesson

    def end(self, classroom_id: str) -> Lesson:
        """The main classroom ``classroom_id`` ends its live lesson."""
        room = self.config.classroom(classroom_id)
        if room.role != "main":
            raise AuthError("not_allowed", f"classroom {classroom_id!r} is not a main classroom")
        pairing = self.config.pairing_of_main(classroom_id)
        lesson = self._lessons.get(pairing.id) if pairing else None
        if lesson is None or lesson.state != "live":
            state = lesson.state if lesson else "idle"
            raise InvalidStateError(f'Cannot end a lesson in state "{state}"')
        lesson.state = "ended"
        lesson.ended_ms = self.clock_ms()
        logger.info("lesson %s: live -> ended", lesson.lesson_id)
        self._emit(lesson)
        return lesson

    def restore(self, lesson: Lesson) -> None:
        """Put back a live lesson a previous mixer process persisted (same ``lesson_id``);
        listeners are told as for a start. A pairing with a live lesson keeps it."""
        current = self._lessons.get(lesson.pairing_id)
        if current is not None and current.state == "live":
            raise InvalidStateError(f'Cannot restore a lesson over one in state "{current.state}"')
        self._lessons[lesson.pairing_id] = lesson
        # Lesson ids end with the counter: never reuse one after a restart.
        with contextlib.suppress(ValueError):
            self._counter = max(self._counter, int(lesson.lesson_id.rsplit("-", 1)[-1]))
        logger.info("lesson %s: restored live", lesson.lesson_id)
        self._emit(lesson)

    def _emit(self, lesson: Lesson) -> None:
        for cb in list(self.on_change):
            cb(lesson)


# -- persistence (the mixer's data_dir/lessons.json) ---------------------------------------
LESSONS_FILE_VERSION = 1
RESTORE_MAX_AGE_MS = 6 * 3600 * 1000
"""A persisted live lesson older than this (ms) is not resumed (the mixer was down for
longer than any lesson lasts)."""


def lessons_to_json(lessons: Iterable[Lesson]) -> str:
    """The live lessons as the JSON document :func:`lessons_from_json` reads."""
    return json.dumps({"version": LESSONS_FILE_VERSION,
                       "lessons": [asdict(x) for x in lessons if x.state == "live"]},
                      ensure_ascii=False, indent=1)


def lessons_from_json(text: str, config: CountyConfig, now_ms: int) -> list[Lesson]:
    """Live lessons from a persisted document that still fit ``config`` and are younger
    than :data:`RESTORE_MAX_AGE_MS`; raises ``ValueError`` saying what is malformed."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("version") != LESSONS_FILE_VERSION:
        raise ValueError("not a lessons file of version 1")
    items = data.get("lessons")
    if not isinstance(items, list):
        raise ValueError("'lessons' is not a list")
    names = {f.name for f in fields(Lesson)}
    out: list[Lesson] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != names:
            raise ValueError(f"lessons[{i}]: wrong fields")
        lesson = Lesson(**item)
        if not isinstance(lesson.lesson_id, str) or not isinstance(lesson.started_ms, int):
            raise ValueError(f"lessons[{i}]: wrong field types")
        try:
            pairing = config.pairing(lesson.pairing_id)
        except KeyError:
            logger.warning("lesson %s: pairing %r no longer configured; not resumed",
                           lesson.lesson_id, lesson.pairing_id)
            continue
        if lesson.state != "live" or now_ms - lesson.started_ms > RESTORE_MAX_AGE_MS:
            logger.info("lesson %s: too old to resume", lesson.lesson_id)
            continue
        # Membership follows the current config (a classroom may have been re-paired).
        lesson.main, lesson.receiving = pairing.main, list(pairing.receiving)
        out.append(lesson)
    return out


def save_lessons(path: Path, lessons: Iterable[Lesson]) -> None:
    """Write the live lessons to ``path`` atomically (temp file, fsync, rename)."""
    text = lessons_to_json(lessons)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lessons-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_lessons(path: Path, config: CountyConfig, now_ms: int | None = None) -> list[Lesson]:
    """Live lessons persisted at ``path`` (none if it does not exist). A malformed file is
    kept aside as ``<path>.corrupt`` (nothing is lost) and no lesson is resumed."""
    import time

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        return lessons_from_json(text, config, now_ms if now_ms is not None
                                 else int(time.time() * 1000))
    except (ValueError, TypeError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        logger.error("%s is malformed (%s); kept as %s, no lesson resumed", path, exc, aside)
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return []

