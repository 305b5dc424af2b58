"""Lesson lifecycle rules."""

from __future__ import annotations

import datetime as dt

import pytest

from syncclass.config import load_config
from syncclass.errors import AuthError, InvalidStateError
from syncclass.lesson import Lesson, LessonRegistry, pick_timetable_entry
from tests.core.test_config import SAMPLE


def registry() -> tuple[LessonRegistry, list[Lesson]]:
    seen: list[Lesson] = []
    reg = LessonRegistry(load_config(SAMPLE), lambda: 1_700_000_000_000)
    reg.on_change.append(lambda lesson: seen.append(lesson))
    return reg, seen


def test_start_and_end() -> None:
    reg, seen = registry()
    assert reg.lesson_of("hetou-3") is None
    lesson = reg.start("main-3-1")
    assert lesson.state == "live" and lesson.subject == "数学"
    assert lesson.receiving == ["hetou-3", "shanping-3"]
    assert reg.lesson_of("shanping-3") is lesson
    with pytest.raises(InvalidStateError, match='state "live"'):
        reg.start("main-3-1")
    reg.end("main-3-1")
    assert lesson.state == "ended" and lesson.ended_ms is not None
    with pytest.raises(InvalidStateError, match='state "ended"'):
        reg.end("main-3-1")
    assert [x.state for x in seen] == ["ended", "ended"]  # same object, mutated
    assert len(seen) == 2


def test_receiving_cannot_start() -> None:
    reg, _ = registry()
    with pytest.raises(AuthError) as info:
        reg.start("hetou-3")
    assert info.value.code == "not_allowed"


def test_pick_timetable_entry() -> None:
    config = load_config(SAMPLE)
    monday = dt.datetime(2026, 11, 23, 8, 40)
    entry = pick_timetable_entry(config, "shiyan-rural-math", monday)
    assert entry is not None and entry.id == "math-g3"
    with pytest.raises(InvalidStateError):
        pick_timetable_entry(config, "shiyan-rural-math", monday, "nope")
