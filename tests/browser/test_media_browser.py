"""Chromium watches a lesson live from ``syncclass media-server`` (hls.js on the recorder's
segments): the video plays and shows the composed timecode of the teacher's camera."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from mixer.comments import CommentStore
from syncclass.demo import http_json
from syncclass.layout import Rect
from syncclass.testing.browser import CHROMIUM, chromium
from syncclass.testing.hls_support import LiveLesson, grab, live_lesson, teacher_rect
from syncclass.timecode import Timecode, read_timecode

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLesson]:
    with live_lesson(tmp_path_factory.mktemp("hls")) as lesson:
        yield lesson


def test_chromium_plays_the_live_lesson(live: LiveLesson) -> None:
    observer = live.config.observers[0]
    rect = teacher_rect(live.config)
    main_number = live.config.classroom_number(live.config.pairings[0].main)
    base = f"{live.media_url}/live/{live.lesson_id}/"
    with chromium() as ctx:
        page = ctx.new_page()
        page.goto(f"{base}?token={observer.token}")
        assert page.url == base  # the credential left the address bar for a cookie
        page.wait_for_function("() => document.getElementById('video').currentTime > 0.5",
                               timeout=30_000)
        assert page.evaluate("window.syncclassWatch.engine") == "hls.js"
        t0 = page.evaluate("document.getElementById('video').currentTime")
        shown = []
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            s = grab(page, rect)
            if s is not None:
                shown.append(s)
            time.sleep(0.4)
        t1 = page.evaluate("document.getElementById('video').currentTime")
        errors = page.evaluate("window.syncclassWatch.errors")
    assert t1 - t0 > 4.0, (t0, t1, errors)  # plays on, about in real time
    read = [s for s in shown if s.timecode is not None]
    assert len(read) >= len(shown) * 0.8 and len(read) >= 8, shown
    assert {s.timecode.source for s in read if s.timecode} == {main_number}
    captures = [s.timecode.capture_ms for s in read if s.timecode]
    assert captures == sorted(captures) and captures[-1] - captures[0] > 3000, captures
    delays = [s.delay_ms for s in read if s.delay_ms is not None]
    # Live, not from the lesson's start: benchmarks/hls_live.py measures the delay (3-5 s
    # once settled); just after the start, on a loaded CI machine, it was up to 10 s.
    assert 0 < min(delays) and max(delays) < 15_000, delays
    assert not [e for e in errors if e.endswith(":fatal")], errors


def frame_timecode(mp4: Path, at_s: float, rect: Rect) -> Timecode | None:
    """The teacher's timecode in the MP4's picture shown at ``at_s`` (the last frame whose
    time is at or before it)."""
    found = None
    with av.open(str(mp4)) as c:
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time > at_s + 1e-3:
                break
            found = frame
    if found is None:
        return None
    y = found.to_ndarray(format="gray")
    return read_timecode(y[rect.y:rect.y + rect.h, rect.x:rect.x + rect.w])


def test_chromium_replays_and_seeks_to_a_comment(live: LiveLesson) -> None:
    """After the lesson: its replay page shows the video with the report beside it; a
    comment written live (the mixer's store) seeks the video to its lesson time, checked by
    the teacher's capture time in the picture shown; an observer comments while replaying."""
    live.end()
    meta_path = live.recorder_dir / "archive" / live.lesson_id / "metadata.json"
    live.dep.wait_for(meta_path.exists, 120, "the archived lesson")
    meta = json.loads(meta_path.read_text())
    offset_ms = meta["recorded_from_ms"] - meta["start_ms"]
    video_s = round(meta["video_duration_s"] * 0.6, 3)
    lesson_ms = round(video_s * 1000 + offset_ms)
    asyncio.run(CommentStore(live.dep.work_dir / "mixer-data").add({
        "lesson_id": live.lesson_id, "pairing_id": meta["pairing_id"],
        "observer_id": "jiaoyan-li", "author": "县教研室 李老师", "text": "这里的提问很好",
        "lesson_ms": lesson_ms, "epoch_ms": meta["start_ms"] + lesson_ms}))
    observer = live.config.observers[0]
    base = f"{live.media_url}/replay/{live.lesson_id}/"
    live.dep.wait_for(lambda: http_json(base + "data.json", token=observer.token)[1]["report"],
                      30, "the lesson report")
    rect = teacher_rect(live.config)
    with chromium() as ctx:
        page = ctx.new_page()
        page.goto(f"{base}?token={observer.token}")
        assert page.url == base
        page.wait_for_function("() => window.syncclassReplay && window.syncclassReplay.ready",
                               timeout=30_000)
        rooms = page.evaluate("window.syncclassReplay.data.timeline.classrooms")
        assert {r["id"] for r in rooms} >= {live.config.pairings[0].main}
        assert any(r["speech"] for r in rooms) and all(r["present"] for r in rooms), rooms
        page.click(".comment[data-seq='live-1']")
        page.wait_for_function(f"() => {{ const v = document.getElementById('video'); "
                               f"return !v.seeking && Math.abs(v.currentTime - {video_s}) "
                               f"< 1.0; }}", timeout=10_000)
        page.wait_for_timeout(300)  # the seeked picture is painted
        shown = grab(page, rect)
        assert shown is not None and shown.timecode is not None
        # The page shows the recording's picture at that time: the frame PyAV decodes from
        # the same MP4 at the page's currentTime carries the same capture time. (The
        # capture time itself may lag the lesson time when the machine was so loaded that
        # the teacher's picture froze in the composite: seen once at load 14 on 2 cores.)
        mp4 = meta_path.with_name("lesson.mp4")
        expected = frame_timecode(mp4, shown.current_time_s, rect)
        assert expected is not None
        assert abs(shown.timecode.capture_ms - expected.capture_ms) <= 150, (shown, expected)
        # Comment while replaying, at 2 s into the video.
        page.evaluate("window.syncclassReplay.seek(2.0)")
        page.wait_for_function("() => !document.getElementById('video').seeking")
        page.fill("#comment-text", "学生回答积极")
        page.click("#comment-form button")
        page.wait_for_selector(".comment[data-seq='replay-1']")
    data = http_json(base + "data.json", token=observer.token)[1]
    added = next(c for c in data["comments"] if c["origin"] == "replay")
    assert added["text"] == "学生回答积极" and abs(added["video_s"] - 2.0) < 0.1
