"""Pacing and frame helpers shared by every source of the classroom PC.

The formats the WebRTC client sends: video ``yuv420p`` with ``time_base`` 1/90000, audio
20 ms frames of 960 ``s16`` mono samples at 48 kHz with ``time_base`` 1/48000 and ``pts``
in samples. :class:`FramePacer` and :class:`SamplePacer` hand frames out in real time;
:func:`audio_frame`, :func:`luma_of` and :func:`plane_view` build and read frames. A new
source (e.g. a screen capture) uses these and nothing else from its sibling sources.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
import numpy.typing as npt

__all__ = [
    "AUDIO_FRAME_SAMPLES",
    "AUDIO_TIME_BASE",
    "SAMPLE_RATE",
    "VIDEO_TIME_BASE",
    "FramePacer",
    "SamplePacer",
    "audio_frame",
    "luma_of",
    "plane_view",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
"""Audio sample rate of every source and sink, Hz."""
AUDIO_FRAME_SAMPLES = 960
"""Samples per audio frame (20 ms at 48 kHz)."""
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)
"""``time_base`` of audio frames: ``pts`` counts samples."""
VIDEO_TIME_BASE = Fraction(1, 90000)
"""``time_base`` of video frames (the RTP video clock)."""

AUDIO_MAX_LATE_S = 0.2
"""An audio reader later than this skips ahead (a ``pts`` gap) instead of bursting."""


def luma_of(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """A copy of the Y plane of ``frame`` (H x W uint8, line padding removed)."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width].copy()


def plane_view(frame: av.VideoFrame, index: int, height: int, width: int) -> npt.NDArray[Any]:
    """A writable numpy view of one plane of ``frame`` without its line padding."""
    plane = frame.planes[index]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(height, plane.line_size)
    return rows[:, :width]




class FramePacer:
    """Paces video frames at ``fps`` on slots aligned to the Unix epoch (``j / fps``), so
    that frames of separate processes are produced at the same instants and a sync mark at
    ``k * P`` always falls on a slot. A late caller gets one frame at once, then the schedule
    continues at the next slot (no burst to catch up); a wall-clock step re-aligns it.
    """

    def __init__(self, fps: float) -> None:
        self._fps = fps
        self._period = 1.0 / fps
        self._slot: int | None = None
        self._origin: float | None = None
        self._last_pts = -1

    async def wait(self) -> int:
        """Sleep until the next slot; return the frame's ``pts`` in 1/90000 s (monotonic)."""
        now = time.time()
        if self._slot is None:
            self._slot = math.ceil(now * self._fps)
            self._origin = time.monotonic()
        due = self._slot / self._fps
        if due - now > 2 * self._period:
            # The wall clock stepped back: re-align instead of stalling.
            self._slot = math.ceil(now * self._fps)
            due = self._slot / self._fps
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
            early = due - time.time()
            if early > 0:
                # asyncio may wake a hair early; a frame must never predate its slot.
                await asyncio.sleep(early + 0.0005)
        self._slot = max(self._slot + 1, math.floor(time.time() * self._fps) + 1)
        assert self._origin is not None
        pts = round((time.monotonic() - self._origin) * 90000)
        pts = max(pts, self._last_pts + 1)
        self._last_pts = pts
        return pts


class SamplePacer:
    """Paces 20 ms audio frames: sample ``n`` is due at ``start + n / 48000``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._start_mono: float | None = None
        self.start_epoch: float | None = None
        """Wall-clock (epoch) time of sample 0, s; set by the first :meth:`next`."""
        self._next = 0
        self.skipped_samples = 0
        """Samples skipped because the reader was more than 200 ms late."""

    def start(self) -> None:
        """Fix sample 0 at now (idempotent)."""
        if self._start_mono is None:
            self._start_mono = time.monotonic()
            self.start_epoch = time.time()

    async def next(self) -> int:
        """Sleep until the next frame is due; return the index of its first sample."""
        self.start()
        assert self._start_mono is not None
        n = self._next
        delay = self._start_mono + n / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > AUDIO_MAX_LATE_S:
            elapsed = int((time.monotonic() - self._start_mono) * SAMPLE_RATE)
            n = elapsed // AUDIO_FRAME_SAMPLES * AUDIO_FRAME_SAMPLES
            self.skipped_samples += n - self._next
            logger.warning(
                "%s: reader %.0f ms late, skipping %d samples",
                self._name,
                -delay * 1000,
                n - self._next,
            )
        self._next = n + AUDIO_FRAME_SAMPLES
        return n


def audio_frame(samples: npt.NDArray[np.int16], pts: int) -> av.AudioFrame:
    """A mono ``s16`` 48 kHz frame of ``samples`` with ``pts`` in samples."""
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    frame.time_base = AUDIO_TIME_BASE
    return frame
