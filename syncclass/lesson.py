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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .config import CountyConfig, LessonId, TimetableEntry
from .errors import AuthError, InvalidStateError
from .private_files import private_dir
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

    def lesson_of_pairing(self, pairing_id: str) -> Lesson | None:
        """The pairing's current (live, else most recent) lesson."""
        return self._lessons.get(pairing_id)

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


class _PersistedLesson(BaseModel):
    """One live lesson as ``lessons.json`` holds it (typed, strict: no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    lesson_id: LessonId
    """Names the lesson's report and comment folders: checked by the lesson id rule."""
    pairing_id: str
    main: str
    receiving: list[str]
    subject: str
    grade: str
    teacher: str
    timetable_id: str | None
    state: LessonStateName
    started_ms: int
    ended_ms: int | None


class _LessonsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: Literal[1]
    lessons: list[_PersistedLesson]


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def lessons_from_json(text: str, config: CountyConfig, now_ms: int) -> list[Lesson]:
    """Live lessons from a persisted document that still fit ``config`` and are younger
    than :data:`RESTORE_MAX_AGE_MS`; raises ``ValueError`` saying what is malformed (not
    JSON, too deeply nested, a field of the wrong type, a lesson id that breaks the id
    rule, two live lessons of one pairing)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(data, dict) or data.get("version") != LESSONS_FILE_VERSION:
        raise ValueError("not a lessons file of version 1")
    try:
        doc = _LessonsFile.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_first_problem(exc)) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    live_pairings: set[str] = set()
    for i, item in enumerate(doc.lessons):
        if item.state == "live":
            if item.pairing_id in live_pairings:
                raise ValueError(f"lessons.{i}: a second live lesson of pairing "
                                 f"{item.pairing_id!r}")
            live_pairings.add(item.pairing_id)
    out: list[Lesson] = []
    for item in doc.lessons:
        lesson = Lesson(**item.model_dump())
        try:
            pairing = config.pairing(lesson.pairing_id)
        except KeyError:
            logger.warning("lesson %s: pairing %r no longer configured; not resumed",
                           lesson.lesson_id, lesson.pairing_id)
            continue
        if lesson.state != "live" or now_ms - (lesson.started_ms or 0) > RESTORE_MAX_AGE_MS:
            logger.info("lesson %s: too old to resume", lesson.lesson_id)
            continue
        # Membership follows the current config (a classroom may have been re-paired).
        lesson.main, lesson.receiving = pairing.main, list(pairing.receiving)
        out.append(lesson)
    return out


def save_lessons(path: Path, lessons: Iterable[Lesson]) -> None:
    """Write the live lessons to ``path`` atomically (temp file, fsync, rename)."""
    text = lessons_to_json(lessons)
    private_dir(path.parent)  # mkstemp makes the file 0600
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
    """Live lessons persisted at ``path`` (none if it does not exist). Anything wrong with
    it (unreadable, not UTF-8, not JSON, too deep, wrong types, a bad lesson id, two live
    lessons of one pairing, a directory in its place) is one ERROR line: the file is kept
    aside as ``<path>.corrupt`` (nothing is lost) and no lesson is resumed; never raises."""
    import time

    try:
        text = path.read_text(encoding="utf-8")
        return lessons_from_json(text, config, now_ms if now_ms is not None
                                 else int(time.time() * 1000))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        aside = path.with_name(path.name + ".corrupt")
        if aside.exists() and (path.is_dir() or aside.is_dir()):
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time() * 1000)}")
        try:
            os.replace(path, aside)
            kept = f"kept as {aside}"
        except OSError as move_exc:
            kept = f"cannot move it aside ({move_exc.strerror or move_exc})"
        logger.error("%s is malformed (%s); %s, no lesson resumed", path, problem[:300], kept)
        return []
