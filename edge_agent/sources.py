"""Sources of the classroom PC: camera, microphone, media files, synthetic test media
(and the scripted microphone of :mod:`edge_agent.scripted`).

Every source hands out PyAV frames paced in real time (:mod:`edge_agent.pacing`), in the
formats the WebRTC client sends: video ``yuv420p`` with ``time_base`` 1/90000, audio
20 ms frames of 960 ``s16`` mono samples at 48 kHz with ``time_base`` 1/48000 and ``pts``
in samples.

Blocking work (file decoding, camera capture) runs off the event loop: file decoding in
the default executor, camera capture on a thread each source owns. The factories
(:func:`open_video_source`, :func:`open_audio_source`) turn the config into objects and can
fall back to synthetic media when a device is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import av
import cv2
import numpy as np
import numpy.typing as npt

from syncclass.config import AudioDeviceConfig, VideoDeviceConfig
from syncclass.errors import DeviceError, FontMissingError
from syncclass.fonts import fit_text, render_text
from syncclass.timecode import Timecode, paint_timecode, timecode_band_height

from .device_list import find_audio_device, find_camera
from .pacing import (
    AUDIO_FRAME_SAMPLES,
    SAMPLE_RATE,
    VIDEO_TIME_BASE,
    FramePacer,
    SamplePacer,
    audio_frame,
    plane_view,
)
from .scripted import ScriptedAudioSource

__all__ = [
    "FLASH_S",
    "AudioSource",
    "CameraVideoSource",
    "FileAudioSource",
    "FileVideoSource",
    "MicrophoneAudioSource",
    "SyntheticAudioSource",
    "SyntheticVideoSource",
    "VideoSource",
    "is_flash_instant",
    "open_audio_source",
    "open_video_source",
]

logger = logging.getLogger(__name__)

_FIRST_FRAME_TIMEOUT_S = 10.0
"""How long a camera may take to deliver its first frame, s."""
_CAMERA_MAX_FAILURES = 50
"""Consecutive failed camera reads after which the camera counts as lost."""
_MIC_QUEUE_BLOCKS = 10
"""Microphone blocks (20 ms each) buffered between the PortAudio thread and the loop."""


# -- protocols ------------------------------------------------------------------------------


@runtime_checkable
class VideoSource(Protocol):
    """Something that hands out video frames paced in real time."""

    width: int
    """Frame width, px."""
    height: int
    """Frame height, px."""
    fps: float
    """Frame rate, frames per second."""

    async def read(self) -> av.VideoFrame:
        """The next ``yuv420p`` frame, due 1/fps after the previous one (``pts`` in 1/90000 s
        from a monotonic clock)."""
        ...

    def close(self) -> None:
        """Release the device; idempotent."""
        ...


@runtime_checkable
class AudioSource(Protocol):
    """Something that hands out 20 ms audio frames paced in real time."""

    async def read(self) -> av.AudioFrame:
        """The next 960-sample ``s16`` mono 48 kHz frame, ``pts`` in samples."""
        ...

    def close(self) -> None:
        """Release the device; idempotent."""
        ...



FLASH_S = 0.2
"""How long a sync flash lasts (s): several frames, so a compositor that samples sources at
its own instants never misses it; measurements use the first flash frame they see and its
burned-in capture time."""


def is_flash_instant(capture_s: float, period_s: float, fps: float) -> int | None:
    """The sync-mark index ``k`` if a frame captured at epoch time ``capture_s`` (s) falls in
    ``[k * period_s, k * period_s + max(1 / fps, FLASH_S))``, else ``None``.

    Marks are aligned to the Unix epoch so that separate processes (and audio beeps) agree.
    """
    k = math.floor(capture_s / period_s)
    return k if capture_s - k * period_s < max(1.0 / fps, FLASH_S) else None


# -- synthetic sources ----------------------------------------------------------------------


class SyntheticVideoSource:
    """A moving test picture with the classroom's label and a burned-in timecode.

    Generated directly in YUV planes (scrolling colour gradient + a bouncing box), ~1 ms per
    1280x720 frame. Every frame carries :class:`~syncclass.timecode.Timecode` with
    ``capture_ms`` = wall-clock time of production. With ``sync_period_s`` set, the frame
    whose capture time falls in ``[k * P, k * P + 1 / fps)`` is a *flash* frame: the picture
    below the timecode band is white (Y=235), to measure A/V sync against audio beeps.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        label: str,
        source: int,
        sync_period_s: float | None = 5.0,
    ) -> None:
        if width % 2 or height % 2 or width < 160 or height < 90:
            raise ValueError(f"synthetic picture {width}x{height} must be even and >= 160x90")
        if fps <= 0:
            raise ValueError(f"fps {fps} must be positive")
        if sync_period_s is not None and sync_period_s <= 1.0 / fps:
            raise ValueError(f"sync_period_s {sync_period_s} must exceed one frame")
        self.width = width
        self.height = height
        self.fps = fps
        self.label = label
        self.source = source
        self.sync_period_s = sync_period_s
        self.last_capture_ms: int | None = None
        """``capture_ms`` of the last frame handed out (epoch ms)."""
        self.frames = 0
        """Frames handed out."""
        self.flashes = 0
        """Flash frames handed out."""
        self._pacer = FramePacer(fps)
        self._last_flash_k: int | None = None
        self._band = timecode_band_height(height)
        self._build_patterns()

    def _build_patterns(self) -> None:
        w, h, band = self.width, self.height, self._band
        x = np.arange(2 * w) / w  # two periods wide so a scrolling window is one slice
        yy = np.arange(h)[:, None] / h
        luma = 40 + 80 * (0.5 + 0.5 * np.sin(2 * np.pi * x))[None, :] + 80 * yy
        self._y_pattern = np.clip(luma, 16, 235).astype(np.uint8)
        self._y_pattern[:band] = 16
        cx = np.arange(w) / (w // 2)  # chroma planes: half width, two periods
        cy = np.arange(h // 2)[:, None] / (h // 2)
        u = 128 + 70 * np.sin(2 * np.pi * cx)[None, :] * (0.4 + 0.6 * cy)
        v = 128 + 70 * np.cos(2 * np.pi * cx)[None, :] * (1.0 - 0.6 * cy)
        self._u_pattern = np.clip(u, 16, 240).astype(np.uint8)
        self._v_pattern = np.clip(v, 16, 240).astype(np.uint8)
        chroma_band = (band + 1) // 2
        self._u_pattern[:chroma_band] = 128
        self._v_pattern[:chroma_band] = 128
        self._box = max(16, (h // 6) & ~1)
        self._label_patch = self._render_label()

    def _render_label(self) -> npt.NDArray[np.uint8]:
        """The label as light text on a dark box, rendered once: with the CJK font of
        :mod:`syncclass.fonts` so that a label in any script (``三(1)班``) shows, not '?'
        (OpenCV's Hershey fonts draw ASCII only); with cv2.putText only when the machine
        has no such font."""
        max_h, max_w = self.height - self._band - 4, self.width - 8
        size_px = max(10, round(self.height / 720 * 32))
        pad = max(2, size_px // 6)
        try:
            shown = fit_text(self.label, size_px, max_w - 2 * pad)
            ink = render_text(shown or self.label[:1], size_px)
        except FontMissingError as exc:
            logger.warning("synthetic camera %r: label drawn in ASCII only: %s", self.label, exc)
            return self._render_label_hershey(max_h, max_w)
        th, tw = ink.shape
        patch = np.full((th + 2 * pad, tw + 2 * pad), 16, dtype=np.uint8)
        patch[pad : pad + th, pad : pad + tw] = 16 + (ink.astype(np.uint16) * (235 - 16)
                                                      // 255).astype(np.uint8)
        return patch[:max_h, :max_w]

    def _render_label_hershey(self, max_h: int, max_w: int) -> npt.NDArray[np.uint8]:
        scale = max(0.4, self.height / 720 * 1.2)
        thickness = max(1, round(self.height / 720 * 2))
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), baseline = cv2.getTextSize(self.label, font, scale, thickness)
        pad = max(2, th // 4)
        patch = np.full((th + baseline + 2 * pad, tw + 2 * pad), 16, dtype=np.uint8)
        cv2.putText(patch, self.label, (pad, pad + th), font, scale, 235, thickness, cv2.LINE_AA)
        return patch[:max_h, :max_w]

    def _draw(self, frame: av.VideoFrame, capture_ms: int, flash: bool) -> None:
        w, h, band = self.width, self.height, self._band
        y = plane_view(frame, 0, h, w)
        u = plane_view(frame, 1, h // 2, w // 2)
        v = plane_view(frame, 2, h // 2, w // 2)
        if flash:
            y[:] = 235
            u[:] = 128
            v[:] = 128
        else:
            shift = (self.frames * 4) % w
            y[:] = self._y_pattern[:, shift : shift + w]
            cshift = shift // 2
            u[:] = self._u_pattern[:, cshift : cshift + w // 2]
            v[:] = self._v_pattern[:, cshift : cshift + w // 2]
            # The box bounces across the picture below the band (triangle wave).
            b = self._box
            span_x, span_y = w - b, h - band - b
            t = self.frames * 6
            bx = abs(t % (2 * span_x) - span_x) & ~1
            by = (band + abs((t // 2) % (2 * span_y) - span_y)) & ~1
            y[by : by + b, bx : bx + b] = 180
            u[by // 2 : (by + b) // 2, bx // 2 : (bx + b) // 2] = 60
            v[by // 2 : (by + b) // 2, bx // 2 : (bx + b) // 2] = 200
            ph, pw = self._label_patch.shape
            top = band + 4
            y[top : top + ph, 4 : 4 + pw] = self._label_patch
            u[top // 2 : (top + ph) // 2, 2 : 2 + pw // 2] = 128
            v[top // 2 : (top + ph) // 2, 2 : 2 + pw // 2] = 128
        y[:band] = 16
        u[: (band + 1) // 2] = 128
        v[: (band + 1) // 2] = 128
        paint_timecode(y, Timecode(capture_ms=capture_ms, source=self.source))

    def produce(self, capture_s: float) -> av.VideoFrame:
        """Generate the frame captured at epoch time ``capture_s`` (s) without pacing
        (``pts`` unset). Used by :meth:`read` and by tests and benchmarks."""
        capture_ms = int(capture_s * 1000)
        flash = False
        if self.sync_period_s is not None:
            k = is_flash_instant(capture_s, self.sync_period_s, self.fps)
            flash = k is not None
            if k is not None and k != self._last_flash_k:
                self._last_flash_k = k
                self.flashes += 1  # counts sync marks, not flash frames
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        self._draw(frame, capture_ms, flash)
        self.frames += 1
        self.last_capture_ms = capture_ms
        return frame

    async def read(self) -> av.VideoFrame:
        """The next frame, paced at ``fps``."""
        pts = await self._pacer.wait()
        frame = self.produce(time.time())
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def close(self) -> None:
        """Nothing to release."""


class SyntheticAudioSource:
    """A continuous-phase sine tone, with epoch-aligned beeps as sync marks.

    Sample ``n`` belongs to wall-clock time ``start_epoch + n / 48000`` (``start_epoch`` is
    taken at the first :meth:`read`). With ``sync_period_s`` = P set, the samples in
    ``[k * P, k * P + beep_ms)`` (epoch-aligned, sample-accurate) are a ``beep_hz`` sine
    instead of the tone.
    """

    def __init__(
        self,
        freq_hz: float,
        amplitude: float = 0.3,
        sync_period_s: float | None = 5.0,
        beep_hz: float = 3000.0,
        beep_ms: int = 100,
    ) -> None:
        if not 0 < freq_hz < SAMPLE_RATE / 2 or not 0 < beep_hz < SAMPLE_RATE / 2:
            raise ValueError(f"tone {freq_hz} Hz / beep {beep_hz} Hz outside (0, 24000)")
        if not 0 <= amplitude <= 1:
            raise ValueError(f"amplitude {amplitude} outside [0, 1] (full scale)")
        if sync_period_s is not None and sync_period_s * 1000 <= beep_ms:
            raise ValueError(f"sync_period_s {sync_period_s} must exceed beep_ms {beep_ms}")
        self.freq_hz = freq_hz
        self.amplitude = amplitude
        self.sync_period_s = sync_period_s
        self.beep_hz = beep_hz
        self.beep_ms = beep_ms
        self._pacer = SamplePacer(f"synthetic audio {freq_hz:g} Hz")
        self._n = np.arange(AUDIO_FRAME_SAMPLES, dtype=np.int64)
        self._start_sample: int | None = None

    @property
    def start_epoch(self) -> float | None:
        """Wall-clock (epoch) time of sample 0, s; ``None`` before the first read."""
        return self._pacer.start_epoch

    def samples(self, n0: int, count: int = AUDIO_FRAME_SAMPLES) -> npt.NDArray[np.int16]:
        """Samples ``n0 .. n0 + count`` (int16) of the signal; needs ``start_epoch``."""
        self._pacer.start()
        if self._start_sample is None:
            assert self._pacer.start_epoch is not None
            self._start_sample = round(self._pacer.start_epoch * SAMPLE_RATE)
        n = n0 + (self._n if count == AUDIO_FRAME_SAMPLES else np.arange(count, dtype=np.int64))
        signal = np.sin((2 * np.pi * self.freq_hz / SAMPLE_RATE) * n)
        if self.sync_period_s is not None:
            period = round(self.sync_period_s * SAMPLE_RATE)
            since_mark = (self._start_sample + n) % period
            beep = since_mark < self.beep_ms * SAMPLE_RATE // 1000
            if beep.any():
                signal = np.where(
                    beep, np.sin((2 * np.pi * self.beep_hz / SAMPLE_RATE) * since_mark), signal
                )
        return (signal * (self.amplitude * 32767)).astype(np.int16)

    def frame_at(self, n0: int) -> av.AudioFrame:
        """The 20 ms frame starting at sample ``n0``, without pacing (tests, benchmarks)."""
        return audio_frame(self.samples(n0), n0)

    async def read(self) -> av.AudioFrame:
        """The next 20 ms frame, paced in real time."""
        return self.frame_at(await self._pacer.next())

    def close(self) -> None:
        """Nothing to release."""


# -- file sources ---------------------------------------------------------------------------


def _open_media(path: str, kind: str) -> tuple[av.container.InputContainer, Any]:
    """Open ``path`` and return the container and its first ``kind`` stream."""
    if not Path(path).is_file():
        raise DeviceError(f"media file {path!r}: no such file")
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DeviceError(f"media file {path!r}: cannot open: {exc}") from None
    streams = container.streams.video if kind == "video" else container.streams.audio
    if not streams:
        container.close()
        raise DeviceError(f"media file {path!r}: has no {kind} stream")
    return container, streams[0]


class FileVideoSource:
    """Video decoded from a media file, looped forever, scaled to ``width`` x ``height``.

    The file plays at its own speed: each tick (at ``fps``) shows the latest file frame
    due at the playback position. Decoding runs in the default executor.
    """

    def __init__(self, path: str, width: int, height: int, fps: float) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.fps = fps
        self.loops = 0
        """Times the file was restarted from the beginning."""
        self._lock = threading.Lock()
        self._container, self._stream = _open_media(path, "video")
        self._frames = self._decode()
        self._pacer = FramePacer(fps)
        self._ticks = 0  # output frames since the file (re)started
        self._loop_start = 0.0  # output time at which the file last started, s
        self._current: av.VideoFrame | None = None
        self._pending: av.VideoFrame | None = None
        self._pending_t = 0.0
        self._first_t: float | None = None
        self._last_t = 0.0
        self._closed = False

    def _decode(self) -> Iterator[av.VideoFrame]:
        try:
            yield from self._container.decode(self._stream)
        except av.FFmpegError as exc:
            logger.warning("media file %r: decode error, restarting: %s", self.path, exc)

    def _rewind(self) -> None:
        self._container.close()
        self._container, self._stream = _open_media(self.path, "video")
        self._frames = self._decode()
        self.loops += 1

    def _frame_time(self, frame: av.VideoFrame) -> float:
        t = frame.time
        if t is None:
            t = self._last_t + 1.0 / float(self._stream.average_rate or self.fps)
        if self._first_t is None:
            self._first_t = t
        return t - self._first_t

    def _next_picture(self) -> av.VideoFrame:
        """The file frame due at the playback position, scaled (blocking)."""
        with self._lock:
            if self._closed:
                raise DeviceError(f"media file {self.path!r}: source is closed")
            while True:
                if self._pending is None:
                    frame = next(self._frames, None)
                    if frame is None:
                        if self._current is None:
                            raise DeviceError(f"media file {self.path!r}: no decodable frames")
                        # Loop: the file restarts one frame duration after its last frame.
                        step = 1.0 / float(self._stream.average_rate or self.fps)
                        self._loop_start += self._last_t + step
                        self._first_t = None
                        self._rewind()
                        continue
                    self._pending = frame
                    self._pending_t = self._frame_time(frame)
                # Playback position in the file, s; the epsilon absorbs float rounding.
                position = self._ticks / self.fps - self._loop_start + 1e-6
                if self._current is None or self._pending_t <= position:
                    self._current = self._pending
                    self._last_t = self._pending_t
                    self._pending = None
                    continue
                break
            self._ticks += 1
            return self._current.reformat(width=self.width, height=self.height, format="yuv420p")

    async def read(self) -> av.VideoFrame:
        """The next frame, paced at ``fps``."""
        pts = await self._pacer.wait()
        picture = await asyncio.to_thread(self._next_picture)
        frame: av.VideoFrame = picture
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._container.close()


class FileAudioSource:
    """Audio decoded from a media file, looped forever, resampled to 48 kHz s16 mono."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loops = 0
        """Times the file was restarted from the beginning."""
        self._lock = threading.Lock()
        self._container, self._stream = _open_media(path, "audio")
        self._frames = self._decode()
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._buffer: list[npt.NDArray[np.int16]] = []
        self._buffered = 0
        self._pacer = SamplePacer(f"audio file {path!r}")
        self._closed = False

    def _decode(self) -> Iterator[av.AudioFrame]:
        try:
            yield from self._container.decode(self._stream)
        except av.FFmpegError as exc:
            logger.warning("media file %r: decode error, restarting: %s", self.path, exc)

    def _push(self, frames: list[av.AudioFrame]) -> None:
        for f in frames:
            samples = f.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            self._buffer.append(samples)
            self._buffered += samples.size

    def _take(self) -> npt.NDArray[np.int16]:
        """The next 960 samples of the looped file (blocking)."""
        with self._lock:
            if self._closed:
                raise DeviceError(f"media file {self.path!r}: source is closed")
            empty_loops = 0
            while self._buffered < AUDIO_FRAME_SAMPLES:
                frame = next(self._frames, None)
                if frame is not None:
                    self._push(self._resampler.resample(frame))
                    continue
                self._push(self._resampler.resample(None))
                if self._buffered < AUDIO_FRAME_SAMPLES:
                    empty_loops += self._buffered == 0
                    if empty_loops > 1:
                        raise DeviceError(f"media file {self.path!r}: no decodable audio")
                self._container.close()
                self._container, self._stream = _open_media(self.path, "audio")
                self._frames = self._decode()
                self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
                self.loops += 1
            joined = np.concatenate(self._buffer)
            out, rest = joined[:AUDIO_FRAME_SAMPLES], joined[AUDIO_FRAME_SAMPLES:]
            self._buffer = [rest] if rest.size else []
            self._buffered = rest.size
            return out

    async def read(self) -> av.AudioFrame:
        """The next 20 ms frame, paced in real time."""
        n0 = await self._pacer.next()
        samples = await asyncio.to_thread(self._take)
        return audio_frame(samples, n0)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._container.close()


# -- camera ---------------------------------------------------------------------------------


class CameraVideoSource:
    """A camera read with OpenCV on a thread this source owns.

    ``index`` opens a local camera by number; ``path`` a device (``/dev/video0``), an RTSP
    URL, or a regular video file (played at ``fps`` and looped, handy for tests). Frames are
    converted BGR → I420 on the capture thread; :meth:`read` hands out the latest one.

    A camera that cannot be opened at start raises :class:`DeviceError` (a configuration
    problem). One lost while running (unplugged USB camera, an RTSP camera rebooting or off
    the network) never raises: :meth:`read` hands out a placeholder picture ("CAMERA
    DISCONNECTED") while the capture thread retries opening it every ``retry_s`` seconds.
    """

    def __init__(
        self, index: int | None, path: str | None, width: int, height: int, fps: float,
        retry_s: float = 3.0,
    ) -> None:
        if index is None and path is None:
            raise DeviceError("camera: neither an index nor a path was given")
        self.width = width
        self.height = height
        self.fps = fps
        self.retry_s = retry_s
        self.device = f"camera {index}" if path is None else f"camera {_safe_url(path)!r}"
        self.frames_captured = 0
        """Frames the capture thread converted."""
        self.connected = True
        """The camera delivers frames (``False`` while the placeholder is shown)."""
        self.reconnects = 0
        """Times the camera came back after being lost."""
        self.placeholder_frames = 0
        """Placeholder pictures handed out while the camera was lost."""
        self._index, self._path = index, path
        self._is_file = path is not None and Path(path).is_file()
        self._capture: Any = self._open(index, path)
        self._latest: npt.NDArray[np.uint8] | None = None
        self._latest_lock = threading.Lock()
        self._first = threading.Event()
        self._stop = threading.Event()
        self._placeholder: npt.NDArray[np.uint8] | None = None
        self._pacer = FramePacer(fps)
        self._thread = threading.Thread(
            target=self._run, name=f"capture {self.device}", daemon=True
        )
        self._thread.start()

    def _open(self, index: int | None, path: str | None) -> Any:
        if path is not None and not path.startswith(("rtsp://", "rtsps://", "http")):
            if not Path(path).exists():
                raise DeviceError(f"{self.device}: no such device or file")
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        if path is not None:
            capture = cv2.VideoCapture(path, cv2.CAP_ANY, timeouts)
        else:
            assert index is not None
            capture = cv2.VideoCapture(index, cv2.CAP_ANY)
        if not capture.isOpened():
            capture.release()
            raise DeviceError(f"{self.device}: cannot open")
        if not self._is_file:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            capture.set(cv2.CAP_PROP_FPS, self.fps)
        logger.debug("%s: opened", self.device)
        return capture

    def _lost(self, why: str) -> None:
        """Capture thread: the camera is gone; show the placeholder and retry."""
        if self.connected:
            logger.warning("%s: lost (%s); showing a placeholder, retrying every %.0f s",
                           self.device, why, self.retry_s)
        self.connected = False
        self._first.set()
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _reopen(self) -> None:
        """Capture thread: one attempt to open the camera again."""
        try:
            self._capture = self._open(self._index, self._path)
        except (DeviceError, cv2.error) as exc:
            logger.debug("%s: still unavailable: %s", self.device, exc)
            self._stop.wait(self.retry_s)

    def _run(self) -> None:
        failures = 0
        period = 1.0 / self.fps
        next_due = time.monotonic()
        while not self._stop.is_set():
            if self._capture is None:
                self._reopen()
                continue
            ok, bgr = self._capture.read()
            if not ok:
                if self._is_file and self.frames_captured:
                    self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                failures += 1
                if failures >= _CAMERA_MAX_FAILURES:
                    self._lost(f"{failures} reads in a row failed")
                    failures = 0
                    continue
                time.sleep(0.01)
                continue
            failures = 0
            if bgr.shape[1] != self.width or bgr.shape[0] != self.height:
                bgr = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_AREA)
            i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
            with self._latest_lock:
                self._latest = i420
            if not self.connected:
                self.connected = True
                self.reconnects += 1
                logger.info("%s: back", self.device)
            self.frames_captured += 1
            self._first.set()
            if self._is_file:
                # A file is not live: play it at fps instead of as fast as it decodes.
                next_due = max(next_due + period, time.monotonic() - period)
                self._stop.wait(max(0.0, next_due - time.monotonic()))

    def placeholder(self) -> npt.NDArray[np.uint8]:
        """The I420 picture shown while the camera is lost (dark grey, white text)."""
        if self._placeholder is None:
            w, h = self.width, self.height
            y = np.full((h, w), 48, np.uint8)
            scale = max(0.4, h / 720 * 1.4)
            thick = max(1, round(h / 360))
            lines = ["CAMERA DISCONNECTED", "retrying...", self.device[:48]]
            for k, text in enumerate(lines):
                s = scale if k == 0 else scale * 0.6
                (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, s, thick)
                org = ((w - tw) // 2, h // 2 + int((k - 0.5) * 2.2 * th))
                cv2.putText(y, text, org, cv2.FONT_HERSHEY_SIMPLEX, s, 235, thick, cv2.LINE_AA)
            uv = np.full((h // 2, w), 128, np.uint8)  # U and V planes, stacked as I420
            self._placeholder = np.vstack([y, uv])
        return self._placeholder

    async def read(self) -> av.VideoFrame:
        """The latest captured frame (or the placeholder while lost), paced at ``fps``."""
        pts = await self._pacer.wait()
        if not self._first.is_set():
            got = await asyncio.to_thread(self._first.wait, _FIRST_FRAME_TIMEOUT_S)
            if not got:
                # The capture thread owns the device; it keeps trying on its own.
                logger.warning("%s: no frame within %.0f s; showing a placeholder",
                               self.device, _FIRST_FRAME_TIMEOUT_S)
                self.connected = False
                self._first.set()
        with self._latest_lock:
            i420 = self._latest if self.connected else None
        if i420 is None:
            i420 = self.placeholder()
            self.placeholder_frames += 1
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def close(self) -> None:
        """Stop the capture thread and release the camera."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=6.0)
        if self._thread.is_alive():
            logger.warning("%s: capture thread did not stop", self.device)
        elif self._capture is not None:
            self._capture.release()


def _safe_url(path: str) -> str:
    """``path`` without a password (RTSP URLs often carry ``user:password@``)."""
    if "://" in path and "@" in path.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = path.split("://", 1)
        creds, host = rest.split("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return path


# -- microphone -----------------------------------------------------------------------------


def _import_sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise DeviceError(f"microphone: sounddevice/PortAudio is not available: {exc}") from None
    return sounddevice


class MicrophoneAudioSource:
    """A microphone read with sounddevice (PortAudio), 48 kHz mono int16, 20 ms blocks.

    PortAudio's callback thread hands blocks to the event loop through a bounded queue
    (10 blocks = 200 ms); when the reader falls behind, the oldest block is dropped and
    counted in :attr:`dropped_blocks`. Dropped blocks leave a ``pts`` gap.

    A microphone missing at start raises :class:`DeviceError`. One that stops delivering
    while running (unplugged, driver error) never raises: after ``stall_s`` without a block
    :meth:`read` hands out 20 ms frames of silence, paced, and the stream is reopened every
    ``retry_s`` seconds until blocks flow again (:attr:`live`, :attr:`reopens`).
    """

    def __init__(self, name: str | None, index: int | None = None, *, retry_s: float = 3.0,
                 stall_s: float = 0.5) -> None:
        sd = _import_sounddevice()
        self._sd = sd
        self._want = (name, index)
        self.retry_s = retry_s
        self.stall_s = stall_s
        self.device_index, self.device_name = self._find_device(sd, name, index)
        self.live = True
        """Blocks are arriving from the device (``False``: silence is handed out)."""
        self.silent_frames = 0
        """Frames of silence handed out while the device delivered nothing."""
        self.reopens = 0
        """Successful reopenings after the device stalled."""
        self._last_seq = -1
        self._last_attempt = 0.0
        self._reopening: asyncio.Task[None] | None = None
        self.dropped_blocks = 0
        """Blocks dropped because the queue was full."""
        self.overflows = 0
        """Blocks PortAudio flagged as input overflow."""
        self._queue: asyncio.Queue[tuple[int, npt.NDArray[np.int16]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._blocks = 0
        self._closed = False
        self._stream = self._new_stream()

    def _new_stream(self) -> Any:
        try:
            return self._sd.InputStream(
                samplerate=SAMPLE_RATE,
                channels=1,
                dtype="int16",
                blocksize=AUDIO_FRAME_SAMPLES,
                device=self.device_index,
                callback=self._callback,
            )
        except Exception as exc:  # PortAudioError and ValueError from sounddevice
            raise DeviceError(f"microphone {self.device_name!r}: cannot open: {exc}") from None

    @staticmethod
    def _find_device(sd: Any, name: str | None, index: int | None = None) -> tuple[int, str]:
        return find_audio_device(sd, name, index, "input")

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio thread: copy the block and hand it to the loop.
        if status and status.input_overflow:
            self.overflows += 1
        block = np.array(indata, dtype=np.int16).reshape(-1)
        seq = self._blocks
        self._blocks += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._put, seq, block)

    def _put(self, seq: int, block: npt.NDArray[np.int16]) -> None:
        assert self._queue is not None
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped_blocks += 1
            if self.dropped_blocks == 1 or self.dropped_blocks % 50 == 0:
                logger.warning(
                    "microphone %r: reader behind, %d blocks dropped",
                    self.device_name,
                    self.dropped_blocks,
                )
        self._queue.put_nowait((seq, block))

    async def read(self) -> av.AudioFrame:
        """The next 20 ms block as it arrives from the device."""
        if self._closed:
            raise DeviceError(f"microphone {self.device_name!r}: source is closed")
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=_MIC_QUEUE_BLOCKS)
            self._loop = asyncio.get_running_loop()
            self._stream.start()
            logger.debug("microphone %r: started", self.device_name)
        try:
            # While silent, the 20 ms timeout paces the silence frames.
            wait = self.stall_s if self.live else AUDIO_FRAME_SAMPLES / SAMPLE_RATE
            async with asyncio.timeout(wait):  # not wait_for (3.11 swallows cancellation)
                seq, block = await self._queue.get()
        except TimeoutError:
            if self.live:
                logger.warning("microphone %r: no sound for %.1f s; sending silence, "
                               "reopening every %.0f s", self.device_name, self.stall_s,
                               self.retry_s)
                self.live = False
            self._maybe_reopen()
            self.silent_frames += 1
            self._last_seq += 1
            return audio_frame(np.zeros(AUDIO_FRAME_SAMPLES, np.int16),
                                self._last_seq * AUDIO_FRAME_SAMPLES)
        if not self.live:
            logger.info("microphone %r: sound is back", self.device_name)
            self.live = True
        seq = max(seq, self._last_seq + 1)  # silence handed out meanwhile keeps its pts
        self._last_seq = seq
        return audio_frame(block, seq * AUDIO_FRAME_SAMPLES)

    def _maybe_reopen(self) -> None:
        now = time.monotonic()
        if self._reopening is not None or now - self._last_attempt < self.retry_s:
            return
        self._last_attempt = now
        self._reopening = asyncio.ensure_future(self._reopen())
        self._reopening.add_done_callback(self._reopened)

    def _reopened(self, task: asyncio.Task[None]) -> None:
        self._reopening = None
        if not task.cancelled() and task.exception() is not None:
            logger.debug("microphone %r: reopen failed: %s", self.device_name, task.exception())

    async def _reopen(self) -> None:
        old = self._stream

        def swap() -> Any:
            with contextlib.suppress(Exception):
                old.stop()
                old.close()
            self.device_index, self.device_name = self._find_device(self._sd, *self._want)
            stream = self._new_stream()
            stream.start()
            return stream

        try:
            stream = await asyncio.to_thread(swap)
        except DeviceError as exc:
            logger.warning("%s; retrying in %.0f s", exc, self.retry_s)
            return
        if self._closed:
            with contextlib.suppress(Exception):
                stream.stop()
                stream.close()
            return
        self._stream = stream
        self._blocks = self._last_seq + 1
        self.reopens += 1
        logger.info("microphone %r: reopened", self.device_name)

    def close(self) -> None:
        """Stop and close the input stream."""
        if self._closed:
            return
        self._closed = True
        self._loop = None
        if self._reopening is not None:
            self._reopening.cancel()
        try:
            self._stream.stop()
            self._stream.close()
        except Exception as exc:
            logger.warning("microphone %r: error on close: %s", self.device_name, exc)


# -- source factories -----------------------------------------------------------------------


def open_video_source(
    cfg: VideoDeviceConfig, *, label: str, source: int, fallback_to_synthetic: bool
) -> VideoSource:
    """The classroom camera described by ``cfg``; with ``fallback_to_synthetic``, a
    :class:`SyntheticVideoSource` (logged as a warning) if the device is missing."""

    def synthetic() -> SyntheticVideoSource:
        return SyntheticVideoSource(cfg.width, cfg.height, cfg.fps, label=label, source=source)

    if cfg.kind == "synthetic":
        return synthetic()
    try:
        if cfg.kind == "file":
            assert cfg.path is not None
            return FileVideoSource(cfg.path, cfg.width, cfg.height, cfg.fps)
        index, path = cfg.index, cfg.path
        if cfg.name and index is None and path is None:
            cam = find_camera(cfg.name)
            index, path = cam.index, cam.path
        return CameraVideoSource(index, path, cfg.width, cfg.height, cfg.fps)
    except DeviceError as exc:
        if not fallback_to_synthetic:
            raise
        logger.warning("%s; using a synthetic camera instead", exc)
        return synthetic()


def open_audio_source(
    cfg: AudioDeviceConfig, *, tone_hz: float, fallback_to_synthetic: bool
) -> AudioSource:
    """The classroom microphone described by ``cfg``; with ``fallback_to_synthetic``, a
    :class:`SyntheticAudioSource` at ``cfg.tone_hz`` or ``tone_hz`` if the device is missing."""
    freq = cfg.tone_hz if cfg.tone_hz is not None else tone_hz
    try:
        if cfg.kind == "file":
            assert cfg.path is not None
            return FileAudioSource(cfg.path)
        if cfg.kind == "microphone":
            return MicrophoneAudioSource(cfg.name, cfg.index)
        if cfg.kind == "script":
            assert cfg.path is not None
            return ScriptedAudioSource(cfg.path)
    except DeviceError as exc:
        if not fallback_to_synthetic:
            raise
        logger.warning("%s; using a synthetic %g Hz tone instead", exc, freq)
    return SyntheticAudioSource(freq)
