"""Automatic directing wired into a lesson's composition (in-process, no sockets)."""

from __future__ import annotations

import time

import av
import pytest

from mixer.compose import SourceFrame
from mixer.media import LessonMedia, VideoInput
from syncclass.config import load_config
from syncclass.directing import COURSEWARE
from syncclass.lesson import Lesson
from tests.core.test_config import SAMPLE


@pytest.fixture
def media() -> LessonMedia:
    config = load_config(SAMPLE)
    pairing = config.pairings[0]
    lesson = Lesson("L1", pairing.id, pairing.main, list(pairing.receiving), "数学", "三年级",
                    "王老师", None, state="live", started_ms=0)
    m = LessonMedia(config, lesson)
    frame = av.VideoFrame(1280, 720, "yuv420p")
    for cid in lesson.classrooms:
        m._video[cid] = VideoInput(cid, latest=SourceFrame(frame, time.monotonic()))
    return m


def _advance(m: LessonMedia, seconds: float) -> None:
    """Move the lesson's media clock ``seconds`` on (its origin earlier)."""
    m._t0 -= seconds


def featured(m: LessonMedia) -> str:
    return m.views["students_view"].compositor.tiles[0].classroom_id


def test_answering_classroom_is_featured_then_teacher_again(media: LessonMedia) -> None:
    main, rural = media.lesson.main, media.lesson.receiving[0]
    media._direct()
    assert featured(media) == main
    _advance(media, 5.0)
    media.set_speaking(rural, True)
    media._direct()
    _advance(media, 1.2)
    switch = media._direct()
    assert switch is not None and switch.shot.active == rural
    assert featured(media) == rural
    # The teacher is in the strip now; the teacher's view is not directed.
    assert main in [t.classroom_id for t in media.views["students_view"].compositor.tiles]
    teacher_tiles = [t.classroom_id for t in media.views["teacher_view"].compositor.tiles]
    assert teacher_tiles == list(media.lesson.receiving)
    media.set_speaking(rural, False)
    media._direct()
    _advance(media, 2.5)
    media._direct()
    assert featured(media) == main
    log = media.directing_log()
    assert [e["active"] for e in log] == [main, rural, main]
    assert [e["reason"] for e in log] == ["start", "speech", "silence"]


def test_courseware_large_and_manual_override(media: LessonMedia) -> None:
    main = media.lesson.main
    media._direct()
    media._video[COURSEWARE] = VideoInput(
        COURSEWARE, latest=SourceFrame(av.VideoFrame(1920, 1080, "yuv420p"), time.monotonic()))
    media._direct()
    assert featured(media) == main  # pictures arrive, but sharing was not started
    media.set_courseware(True)
    media._direct()
    tiles = media.views["students_view"].compositor.tiles
    assert tiles[0].classroom_id == COURSEWARE and tiles[1].classroom_id == main
    rural = media.lesson.receiving[1]
    media.set_directing(rural)
    media._direct()
    assert featured(media) == rural
    media.set_directing(None)
    media._direct()
    assert featured(media) == COURSEWARE
    media.set_courseware(False)
    media._direct()
    assert featured(media) == main
    assert [e["reason"] for e in media.directing_log()] == [
        "start", "courseware", "manual", "auto", "courseware"]
