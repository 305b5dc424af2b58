"""Courseware (双流, issue 21): the synthetic slide deck, its legibility, and the track that
sends it for text (few frames while still, more on a change, nothing unless shared)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import unicodedata
from pathlib import Path

import av
import numpy as np
import pytest

from edge_agent.courseware import (
    DEFAULT_DECK,
    CoursewareTrack,
    Slide,
    SlideDeckSource,
    changed,
    file_source,
    screen_source,
    slide_text,
)
from syncclass.errors import DeviceError
from tests.edge_agent.test_screen import xvfb  # noqa: F401 - the X server fixture


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def char_accuracy(truth: str, got: str) -> float:
    """1 - Levenshtein distance / len(truth), over characters without spaces, after NFKC
    (tesseract writes full-width '？' and '：' as '?' and ':'), as in the benchmark."""
    a = "".join(unicodedata.normalize("NFKC", truth).split())
    b = "".join(unicodedata.normalize("NFKC", got).split())
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return max(0.0, 1 - prev[-1] / max(1, len(a)))


def test_slides_change_at_known_times() -> None:
    assert slide_text(DEFAULT_DECK, 0.0)[0] == 0
    assert slide_text(DEFAULT_DECK, 8.5)[0] == 1
    assert slide_text(DEFAULT_DECK, 31.9)[0] == 3
    assert slide_text(DEFAULT_DECK, 32.1)[0] == 0  # the deck repeats
    clock = Clock()
    deck = SlideDeckSource(640, 360, start_s=clock.t, clock=clock)
    first = deck.grab()
    assert deck.grab() is first  # rendered once per slide
    clock.t += 8.0
    second = deck.grab()
    assert second is not first and changed(first, second)
    assert not changed(second, deck.grab())


def test_source_slides_are_legible_to_ocr(tmp_path: Path) -> None:
    """The reference for the legibility measurement: Debian's tesseract (chi_sim) reads
    every source slide's Chinese text at >= 95 % character accuracy (in WenQuanYi Zen Hei
    it read 课堂 / 蛋糕 of the third slide as 课浓 / 重糠: 87 %)."""
    assert shutil.which("tesseract"), "tesseract-ocr is installed by scripts/bootstrap.sh"
    import cv2
    clock = Clock()
    deck = SlideDeckSource(1280, 720, start_s=clock.t, clock=clock)
    png = tmp_path / "slide.png"
    scores = []
    for slide in DEFAULT_DECK:
        clock.t = deck.start_s + slide.at_s + 1.0
        cv2.imwrite(str(png), deck.grab().to_ndarray(format="gray"))
        out = subprocess.run(["tesseract", str(png), "-", "-l", "chi_sim", "--psm", "6"],
                             capture_output=True, text=True, check=True).stdout
        scores.append((char_accuracy("".join(slide.lines), out.replace("\n", "")), out))
    assert all(acc >= 0.95 for acc, _ in scores), scores


async def test_track_sends_only_when_shared_and_more_on_change() -> None:
    clock = Clock()
    deck = (Slide(0.0, ("第一页",)), Slide(1.0, ("第二页",)))
    source = SlideDeckSource(640, 360, deck, start_s=clock.t, clock=clock)
    # A still slide is sent once every 4 s: the 1 s below sees only the first frame.
    track = CoursewareTrack(source, max_fps=20.0, idle_fps=0.25, bitrate_kbps=800)
    with pytest.raises(TimeoutError):  # not shared: nothing is sent
        await asyncio.wait_for(track.recv(), 0.3)
    track.set_shared(True)
    decoder = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < 1.0:
        try:
            packet = await asyncio.wait_for(track.recv(), 1.0 - (loop.time() - start))
        except TimeoutError:
            break
        frames.extend(decoder.decode(av.Packet(bytes(packet))))
    assert track.frames_sent == 1
    clock.t += 1.0  # the slide changes: sent at the next look (1/20 s), not after 4 s
    t_change = loop.time()
    while track.frames_sent == 1:
        await track.recv()
    assert loop.time() - t_change < 3.0
    assert track.changes == 2  # the first picture and the change
    assert frames and (frames[0].width, frames[0].height) == (640, 360)
    track.set_shared(False)
    track.stop()
    with pytest.raises(Exception):  # noqa: B017 - MediaStreamError once stopped
        await asyncio.wait_for(track.recv(), 1.0)


def test_file_source_loops_a_picture(tmp_path: Path) -> None:
    png = tmp_path / "slide.png"
    import cv2
    cv2.imwrite(str(png), np.full((360, 640, 3), 200, np.uint8))
    src = file_source(png)
    try:
        frame = src.grab()
        assert (frame.width, frame.height) == (640, 360)
    finally:
        src.close()
    with pytest.raises(DeviceError, match="does not exist"):
        file_source(tmp_path / "missing.mp4")


def test_screen_source_grabs_an_x_display(xvfb: str) -> None:  # noqa: F811
    """The teacher PC's screen through FFmpeg's x11grab (PyAV), the whole display and a
    region of it, on a real X server (Xvfb)."""
    # Both open at once: an X server without -noreset resets when its last client leaves,
    # and a connection made during the reset fails.
    whole = screen_source(xvfb, fps=5.0)
    try:
        region = screen_source(f"{xvfb}+100,60", fps=5.0, video_size="640x360")
        try:
            frame = whole.grab()
            assert (frame.width, frame.height) == (1280, 720)
            assert frame.format.name == "yuv420p"
            assert (region.grab().width, region.grab().height) == (640, 360)
        finally:
            region.close()
    finally:
        whole.close()
    with pytest.raises(DeviceError, match="courseware screen"):
        screen_source(":999", fps=5.0)  # no such display
