"""Minors' data is readable by the service's own user only (issue 18, item 8): reports,
comments, the SQLite database, lessons.json's folder and everything the recorder writes are
0600 files in 0700 folders, whatever the umask (the tests run under 022, the usual one)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixer.comments import CommentStore
from mixer.report import build_report, write_report
from mixer.store import ReportStore
from recorder.archive import LocalArchive, Spool
from recorder.finalize import finalize_lesson
from recorder.segments import LessonRecording
from syncclass.config import default_config_path, load_config
from syncclass.lesson import save_lessons
from tests.mixer.test_report_files import data_for, lesson_at
from tests.recorder.test_recorder_units import MediaSource, feed, make_meta


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(root: Path) -> None:
    """``root`` and everything under it: folders 0700, files 0600."""
    seen = [root, *root.rglob("*")]
    assert len(seen) > 1
    bad = [(str(p), oct(mode(p))) for p in seen
           if mode(p) != (0o700 if p.is_dir() else 0o600)]
    assert bad == []


def test_report_files_and_database(tmp_path: Path) -> None:
    config = load_config(default_config_path())
    lesson = lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone())
    paths = write_report(build_report(config, data_for(lesson), generated_ms=1),
                         tmp_path / "reports" / lesson.lesson_id)
    assert {"json", "csv", "html"} <= set(paths)
    assert_private(tmp_path / "reports")
    store = ReportStore(f"sqlite:///{tmp_path / 'db' / 'analytics.db'}")
    store.init()
    assert_private(tmp_path / "db")
    save_lessons(tmp_path / "state" / "lessons.json", [])
    assert_private(tmp_path / "state")


async def test_comment_files(tmp_path: Path) -> None:
    comments = CommentStore(tmp_path)
    await comments.add({"lesson_id": "lesson-1", "pairing_id": "p", "observer_id": "o",
                        "author": "O", "text": "好", "lesson_ms": 1, "epoch_ms": 1})
    assert_private(tmp_path / "lessons")


def test_recording_files(tmp_path: Path) -> None:
    rec = LessonRecording(tmp_path / "out", make_meta(), segment_s=2.0)
    src = MediaSource()
    feed(rec, src, 0, 75)
    assert_private(tmp_path / "out")  # open segment, journal, meta, playlist
    rec.close("lesson_ended")
    result = asyncio.run(finalize_lesson(rec.dir, rec.meta, lambda st, p: None))
    assert_private(tmp_path / "out")  # lesson.mp4, poster.jpg, metadata.json too
    spool = Spool(tmp_path / "spool")
    job = spool.add(rec.meta.lesson_id, result.files(), result.sha256)
    assert_private(tmp_path / "spool")
    LocalArchive(tmp_path / "archive").put(job, lambda st, p: None)
    assert_private(tmp_path / "archive")


def test_existing_roots_keep_their_mode_lesson_folders_are_tightened(tmp_path: Path) -> None:
    """A configured root may be shared (never chmod /tmp); a lesson's folder is ours."""
    from syncclass.private_files import private_dir

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    private_dir(shared)
    assert mode(shared) == 0o755
    old_lesson = shared / "lesson-1"
    old_lesson.mkdir()
    os.chmod(old_lesson, 0o755)  # left by an older version
    private_dir(old_lesson, own=True)
    assert mode(old_lesson) == 0o700
    private_dir(shared / "new" / "deeper")
    assert mode(shared / "new") == 0o700 and mode(shared / "new" / "deeper") == 0o700
