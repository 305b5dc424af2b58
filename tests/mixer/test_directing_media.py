"""Automatic directing wired into a lesson's composition (in-process, no sockets)."""

from __future__ import annotations

import time

import av
import pytest

from mixer.compose import SourceFrame
from mixer.media import LessonMedia, VideoInput
from syncclass.config import CountyConfig, load_config
from syncclass.directing import COURSEWARE
from syncclass.lesson import Lesson
from tests.core.test_config import SAMPLE


def _lesson_media(config: CountyConfig) -> LessonMedia:
    """The sample pairing's live lesson, every classroom's picture arriving."""
    pairing = config.pairings[0]
    lesson = Lesson("L1", pairing.id, pairing.main, list(pairing.receiving), "数学", "三年级",
                    "王老师", None, state="live", started_ms=0)
    m = LessonMedia(config, lesson)
    frame = av.VideoFrame(1280, 720, "yuv420p")
    for cid in lesson.classrooms:
        m._video[cid] = VideoInput(cid, latest=SourceFrame(frame, time.monotonic()))
    return m


@pytest.fixture
def media() -> LessonMedia:
    return _lesson_media(load_config(SAMPLE))


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


def test_directing_counts_from_the_detectors_times(media: LessonMedia) -> None:
    """The analytics' voice detector reports when the answer started and when its last
    voiced frame ended (epoch ms); the lesson's directing counts its onset and release
    from those, not from when the detector's decision reached the mixer."""
    main, rural = media.lesson.main, media.lesson.receiving[0]

    def epoch_ms(lesson_s: float) -> float:
        return media.t0_epoch_ms + lesson_s * 1000

    def advance_to(lesson_s: float) -> None:
        media._t0 = time.monotonic() - lesson_s

    advance_to(0.0)
    media._direct()
    # The detector's decision arrives at 5.4 s for speech that began at 5.0 s.
    advance_to(5.4)
    media.set_speaking(rural, True, epoch_ms(5.0), epoch_ms(5.4))
    media._direct()
    advance_to(6.05)
    switch = media._direct()
    assert switch is not None and switch.shot.active == rural
    # The answer's last voiced frame ends at 9.0 s; "silent" arrives at 9.3 s.
    advance_to(9.3)
    media.set_speaking(rural, False, None, epoch_ms(9.0))
    assert media._direct() is None
    advance_to(10.05)
    switch = media._direct()
    assert switch is not None and switch.shot.active == main and switch.reason == "silence"


def test_directing_timing_comes_from_the_config() -> None:
    """``media.directing`` sets the lesson's rules: with onset_s 3 s, a classroom that has
    spoken 2 s is not featured yet, and is at 3 s."""
    config = load_config(SAMPLE)
    config = config.model_copy(update={"media": config.media.model_copy(update={
        "directing": config.media.directing.model_copy(update={"onset_s": 3.0})})})
    m = _lesson_media(config)
    lesson = m.lesson
    rural = lesson.receiving[0]
    assert m.director.rules.onset_s == 3.0
    m._direct()
    _advance(m, 5.0)
    m.set_speaking(rural, True)
    m._direct()
    _advance(m, 2.0)
    assert m._direct() is None and featured(m) == lesson.main
    _advance(m, 1.1)
    switch = m._direct()
    assert switch is not None and featured(m) == rural
