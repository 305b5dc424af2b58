"""Courseware (双流): the teacher PC's screen, a file, or a synthetic slide deck, sent by
the main classroom's agent as a second video track next to its camera.

Sources (:func:`open_courseware`):

* ``screen`` — FFmpeg's screen grabbers through PyAV: ``x11grab`` on Linux (``display``,
  e.g. ``:0.0``, optionally a region ``+x,y`` with ``video_size``), ``gdigrab`` on Windows
  (``desktop`` or ``title=<window title>``);
* ``file`` — a picture or a video (looped);
* ``synthetic`` — a slide deck with Chinese text that changes at known times (drawn with
  the CJK font of :mod:`syncclass.fonts`), for tests and the demo.

Encoded for text (:class:`CoursewareTrack`): full resolution, few frames while the screen
is still (``idle_fps``, default 1) and more when it changes (up to ``max_fps``), and a
bitrate that gives each of those few frames many bits, so slide text stays legible after
the mixer scales it into the view. Sharing starts and stops without renegotiation: the
track is always offered, and sends nothing while not shared.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from syncclass.codec import H264Encoder
from syncclass.config import CoursewareConfig
from syncclass.errors import DeviceError
from syncclass.fonts import render_text

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


@dataclass(frozen=True)
class Slide:
    """One slide of the synthetic deck."""

    at_s: float
    """When it appears, seconds after the deck's start."""
    lines: tuple[str, ...]
    """Its text, one entry per line (the first is the title)."""


DEFAULT_DECK: tuple[Slide, ...] = (
    Slide(0.0, ("第一课 分数的认识", "把一个整体平均分成几份", "每份是它的几分之一")),
    Slide(8.0, ("例题一 比较大小", "二分之一和三分之一", "哪一个更大？为什么？")),
    Slide(16.0, ("课堂练习", "小明吃了四分之一个蛋糕", "还剩下几分之几？")),
    Slide(24.0, ("小结 今天学到了什么", "分子 分母 分数线", "下节课：分数的加法")),
)
"""A primary-school maths deck (simplified Chinese), one slide every 8 s, repeating."""


class CoursewareSource(Protocol):
    """Pictures of the courseware; :meth:`grab` returns the current one."""

    width: int
    height: int

    def grab(self) -> av.VideoFrame:
        """The courseware as it looks now (yuv420p, ``width`` x ``height``)."""
        ...

    def close(self) -> None: ...


def slide_text(deck: tuple[Slide, ...], elapsed_s: float, period_s: float | None = None
               ) -> tuple[int, tuple[str, ...]]:
    """Index and lines of the slide shown ``elapsed_s`` seconds after the deck's start;
    the deck repeats every ``period_s`` (default: 8 s after its last slide)."""
    if not deck:
        raise ValueError("a slide deck needs at least one slide")
    period = period_s if period_s is not None else deck[-1].at_s + 8.0
    t = elapsed_s % period if period > 0 else elapsed_s
    index = 0
    for i, slide in enumerate(deck):
        if slide.at_s <= t:
            index = i
    return index, deck[index].lines


def render_slide(lines: tuple[str, ...], width: int, height: int) -> npt.NDArray[np.uint8]:
    """A slide as an I420 buffer (height * 3 / 2 rows): dark text on white in the slide
    font (:func:`syncclass.fonts.find_slide_font`, a YaHei-like sans), the title larger,
    everything in the top 70 % (the view's picture-in-picture strip may cover the bottom).
    Sizes as on real slides: at 1280x720 the title is 60 px and the body 45 px (on a
    1080p slide 90 and 67 px, i.e. 45 pt and 34 pt; real courseware keeps body text at
    24 pt or more)."""
    luma = np.full((height, width), 235, np.uint8)
    title_px = max(16, height // 12)
    body_px = max(14, height // 16)
    y = height // 12
    for i, line in enumerate(lines):
        ink = render_text(line, title_px if i == 0 else body_px, "slide")
        h, w = ink.shape
        x = width // 12
        w = min(w, width - x)
        if y + h > height * 7 // 10:
            break
        region = luma[y : y + h, x : x + w]
        np.subtract(region, (ink[:, :w].astype(np.uint16) * (235 - 16) // 255).astype(np.uint8),
                    out=region)
        y += h + h // 2
    chroma = np.full((height // 2, width), 128, np.uint8)  # U then V, each h/2 x w/2
    return np.vstack([luma, chroma])


class SlideDeckSource:
    """The synthetic deck: slides change at known times after ``start_s`` (epoch seconds;
    default 0, so the slide shown is a function of the wall clock and a test or benchmark
    knows from a frame's capture time which text it must show)."""

    def __init__(self, width: int = 1280, height: int = 720,
                 deck: tuple[Slide, ...] = DEFAULT_DECK, start_s: float | None = 0.0,
                 clock: Any = time.time) -> None:
        if width % 2 or height % 2 or width < 160 or height < 90:
            raise ValueError(f"slide size must be even and at least 160x90, got {width}x{height}")
        self.width, self.height = width, height
        self.deck = deck
        self.start_s = clock() if start_s is None else start_s
        self._clock = clock
        self._cache: dict[int, av.VideoFrame] = {}

    def current(self) -> tuple[int, tuple[str, ...]]:
        """Index and text of the slide shown now."""
        return slide_text(self.deck, self._clock() - self.start_s)

    def grab(self) -> av.VideoFrame:
        index, lines = self.current()
        frame = self._cache.get(index)
        if frame is None:
            frame = av.VideoFrame.from_ndarray(render_slide(lines, self.width, self.height),
                                               format="yuv420p")
            self._cache[index] = frame
        return frame

    def close(self) -> None:
        self._cache.clear()


class _GrabberSource:
    """Frames from an FFmpeg input (screen grabber or file) decoded on a thread; ``grab``
    gives the newest one."""

    def __init__(self, url: str, fmt: str | None, options: dict[str, str], loop_file: bool,
                 what: str) -> None:
        self._url, self._fmt, self._options, self._loop = url, fmt, options, loop_file
        self._what = what
        try:
            self._container = av.open(url, format=fmt, options=options)
        except (av.FFmpegError, OSError) as exc:
            raise DeviceError(f"cannot open courseware {what}: {exc}") from None
        stream = self._container.streams.video[0]
        self.width = stream.codec_context.width // 2 * 2
        self.height = stream.codec_context.height // 2 * 2
        self._latest: av.VideoFrame | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"courseware-{what}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(5.0):
            self.close()
            raise DeviceError(f"courseware {what} gave no picture within 5 s")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                start, count = time.monotonic(), 0
                for frame in self._container.decode(video=0):
                    self._latest = frame.reformat(width=self.width, height=self.height,
                                                  format="yuv420p")
                    self._ready.set()
                    count += 1
                    if self._stop.is_set():
                        return
                    if self._loop and frame.time is not None:  # a file plays at its pace
                        self._stop.wait(max(0.0, frame.time - (time.monotonic() - start)))
                if not self._loop or count <= 1:
                    return  # a grabber that ended, or a still picture: keep the last frame
                self._container.seek(0)
        except (av.FFmpegError, OSError) as exc:
            logger.warning("courseware %s stopped: %s", self._what, exc)

    def grab(self) -> av.VideoFrame:
        assert self._latest is not None
        return self._latest

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        self._container.close()


def screen_source(display: str | None = None, window: str | None = None, fps: float = 10.0,
                  video_size: str | None = None) -> _GrabberSource:
    """The teacher PC's screen: x11grab (Linux; ``display`` such as ``:0.0`` or
    ``:0.0+100,200`` with ``video_size``), gdigrab (Windows; ``window`` is a window title,
    else the whole desktop)."""
    options = {"framerate": f"{fps:g}", "draw_mouse": "1"}
    if video_size:
        options["video_size"] = video_size
    if sys.platform == "win32":
        url = f"title={window}" if window else "desktop"
        return _GrabberSource(url, "gdigrab", options, False, f"screen {url}")
    if window:
        raise DeviceError("choosing a window by title needs Windows' gdigrab; on Linux give "
                          "the display and a region (display ':0.0+x,y' and video_size)")
    url = display or ":0.0"
    return _GrabberSource(url, "x11grab", options, False, f"screen {url}")


def file_source(path: str | Path) -> _GrabberSource:
    """A picture or a video file, looped."""
    p = Path(path)
    if not p.is_file():
        raise DeviceError(f"courseware file {p} does not exist")
    return _GrabberSource(str(p), None, {}, True, f"file {p.name}")


def changed(a: av.VideoFrame | None, b: av.VideoFrame, share: float = 1e-4) -> bool:
    """Whether picture ``b`` differs visibly from ``a``: more than ``share`` of the luma
    samples on a half-resolution grid moved by over 24 steps (a changed word on a slide
    moves hundreds; capture noise none)."""
    if a is None or a.width != b.width or a.height != b.height:
        return True
    if a is b:
        return False
    ya = a.to_ndarray(format="gray")[::2, ::2].astype(np.int16)
    yb = b.to_ndarray(format="gray")[::2, ::2].astype(np.int16)
    moved = int(np.count_nonzero(np.abs(ya - yb) > 24))
    return moved > share * ya.size


class CoursewareTrack(MediaStreamTrack):
    """The courseware as encoded H.264 packets (aiortc only packetizes them).

    While :attr:`shared` is False it sends nothing. While shared it looks at the source
    ``max_fps`` times a second and sends a frame when the picture changed, and at least
    ``idle_fps`` frames a second otherwise; a change raises the rate at once, so a slide
    change reaches the rural rooms within one ``1 / max_fps``."""

    kind = "video"

    def __init__(self, source: CoursewareSource, *, max_fps: float = 10.0,
                 idle_fps: float = 1.0, bitrate_kbps: int = 1200,
                 keyframe_interval_s: float = 4.0) -> None:
        super().__init__()
        if not 0 < idle_fps <= max_fps:
            raise ValueError(f"need 0 < idle_fps <= max_fps, got {idle_fps} / {max_fps}")
        self.source = source
        self.max_fps, self.idle_fps = max_fps, idle_fps
        # The encoder's nominal rate is the idle one: its rate control then spends the
        # bitrate on few, sharp frames (a still slide is one frame a second).
        self.encoder = H264Encoder(source.width, source.height, idle_fps, bitrate_kbps,
                                   keyframe_interval_s, 0.5, threads=1, name="courseware")
        self._shared = asyncio.Event()
        self._pending: deque[av.Packet] = deque()
        self._last: av.VideoFrame | None = None
        self._last_sent = 0.0
        self._t0 = time.monotonic()
        self.frames_sent = 0
        """Frames encoded and sent."""
        self.changes = 0
        """Frames sent because the picture changed."""

    @property
    def shared(self) -> bool:
        """Whether the courseware is being sent now."""
        return self._shared.is_set()

    def set_shared(self, on: bool) -> None:
        """Start (True) or stop sending; a start begins with a keyframe."""
        if on and not self._shared.is_set():
            self._last = None
            self.encoder.request_keyframe()
            self._shared.set()
        elif not on:
            self._shared.clear()

    async def recv(self) -> av.Packet:
        loop = asyncio.get_running_loop()
        while not self._pending:
            if self.readyState != "live":
                raise MediaStreamError
            await self._shared.wait()
            await asyncio.sleep(1.0 / self.max_fps)
            if not self._shared.is_set():
                continue
            frame = self.source.grab()
            now = time.monotonic()
            moved = changed(self._last, frame)
            if not moved and now - self._last_sent < 1.0 / self.idle_fps:
                continue
            self.changes += moved
            self._last, self._last_sent = frame, now
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
            out.pts = int((now - self._t0) * VIDEO_CLOCK)
            out.time_base = VIDEO_TIME_BASE
            self.frames_sent += 1
            self._pending.extend(await loop.run_in_executor(None, self.encoder.encode, out))
        return self._pending.popleft()

    def stop(self) -> None:
        super().stop()
        self._shared.set()  # wake recv so that it raises MediaStreamError


def open_courseware(cfg: CoursewareConfig) -> CoursewareSource | None:
    """The configured courseware source, or None for ``kind: none``; :class:`DeviceError`
    naming the device when it cannot be opened."""
    if cfg.kind == "none":
        return None
    if cfg.kind == "synthetic":
        return SlideDeckSource(cfg.width, cfg.height)
    if cfg.kind == "file":
        assert cfg.path is not None
        return file_source(cfg.path)
    return screen_source(cfg.display, cfg.window, cfg.max_fps, cfg.video_size)
