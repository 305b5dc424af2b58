"""Sinks of the classroom PC: where received video and audio go (the classroom display
with its status strip, the sound card, a window, files, nowhere).

:func:`open_video_sink` and :func:`open_audio_sink` turn the config into objects. The
classroom display (:class:`edge_agent.screen.ScreenVideoSink`) and the speakers
(:class:`edge_agent.speakers.SpeakerAudioSink`) live in their own modules.
"""

from __future__ import annotations

import logging
import os
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import av
import numpy as np

from syncclass.config import SinkConfig
from syncclass.errors import DeviceError

from .pacing import SAMPLE_RATE, VIDEO_TIME_BASE
from .screen import ScreenVideoSink
from .speakers import SpeakerAudioSink

__all__ = [
    "AudioSink",
    "FileVideoSink",
    "NullAudioSink",
    "NullVideoSink",
    "VideoSink",
    "WavAudioSink",
    "WindowVideoSink",
    "open_audio_sink",
    "open_video_sink",
]

logger = logging.getLogger(__name__)


# -- protocols ------------------------------------------------------------------------------


@runtime_checkable
class VideoSink(Protocol):
    """Where received or composed video is shown or stored."""

    def write(self, frame: av.VideoFrame) -> None:
        """Show or store one frame."""
        ...

    def close(self) -> None:
        """Flush and release; idempotent."""
        ...


@runtime_checkable
class AudioSink(Protocol):
    """Where received audio is played or stored."""

    def write(self, frame: av.AudioFrame) -> None:
        """Play or store one frame."""
        ...

    def close(self) -> None:
        """Flush and release; idempotent."""
        ...


# -- video sinks ----------------------------------------------------------------------------


class NullVideoSink:
    """Discards frames, counting them."""

    def __init__(self) -> None:
        self.frames = 0
        """Frames written."""

    def write(self, frame: av.VideoFrame) -> None:
        """Count the frame."""
        self.frames += 1

    def close(self) -> None:
        """Nothing to release."""


class FileVideoSink:
    """Encodes frames to H.264 (libx264 ultrafast) in an .mp4/.mkv file.

    The file is opened on the first frame, whose size fixes the output size (later frames
    of another size are scaled). Timestamps follow the frames' ``pts`` when they have one
    (so gaps stay gaps), else ``fps``. :meth:`close` flushes the encoder and finishes the
    file. :meth:`write` encodes on the caller's thread (~3-6 ms per 720p frame).
    """

    def __init__(self, path: str, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps {fps} must be positive")
        self.path = path
        self.fps = fps
        self.frames = 0
        """Frames encoded."""
        self._container: av.container.OutputContainer | None = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._first_time: float | None = None
        self._last_pts = -1
        self._closed = False

    def _open(self, width: int, height: int) -> None:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            container = av.open(self.path, mode="w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise DeviceError(f"video file {self.path!r}: cannot create: {exc}") from None
        stream = container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = VIDEO_TIME_BASE
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        self._container, self._stream, self._size = container, stream, (width, height)
        logger.debug("video file %r: opened %dx%d", self.path, width, height)

    def _pts(self, frame: av.VideoFrame) -> int:
        t = frame.time
        if t is None:
            pts = round(self.frames / self.fps * 90000)
        else:
            if self._first_time is None:
                self._first_time = t
            pts = round((t - self._first_time) * 90000)
        pts = max(pts, self._last_pts + 1)
        self._last_pts = pts
        return pts

    def write(self, frame: av.VideoFrame) -> None:
        """Encode one frame."""
        if self._closed:
            raise DeviceError(f"video file {self.path!r}: sink is closed")
        if self._size is None:
            self._open(frame.width, frame.height)
        assert self._size is not None and self._container is not None
        pts = self._pts(frame)
        width, height = self._size
        if frame.width != width or frame.height != height or frame.format.name != "yuv420p":
            frame = frame.reformat(width=width, height=height, format="yuv420p")
        else:
            frame = frame.reformat()  # a fresh frame: the caller's pts stays untouched
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            logger.debug("video file %r: no frames, nothing written", self.path)
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
        logger.debug("video file %r: closed after %d frames", self.path, self.frames)


class WindowVideoSink:
    """Shows frames in a pygame window (or full screen), scaled to fit, aspect kept.

    Events are pumped on every frame so the window stays responsive; closing the window
    sets :attr:`quit_requested`. ``SDL_VIDEODRIVER=dummy`` runs it headless.
    """

    def __init__(self, fullscreen: bool, title: str) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError as exc:
            raise DeviceError(
                f"window: pygame is not installed ({exc}); install the 'window' extra"
            ) from None
        self._pg: Any = pygame
        try:
            pygame.display.init()
        except pygame.error as exc:
            raise DeviceError(
                f"window: no display available ({exc}); set DISPLAY, or use a 'file' or "
                "'null' screen"
            ) from None
        self.fullscreen = fullscreen
        self.title = title
        self.frames = 0
        """Frames shown."""
        self.quit_requested = False
        """The user closed the window."""
        self._screen: Any = None
        self._closed = False
        pygame.display.set_caption(title)

    def _ensure_screen(self, width: int, height: int) -> Any:
        pg = self._pg
        if self._screen is None:
            try:
                if self.fullscreen:
                    self._screen = pg.display.set_mode((0, 0), pg.FULLSCREEN)
                else:
                    self._screen = pg.display.set_mode((width, height), pg.RESIZABLE)
            except pg.error as exc:
                raise DeviceError(f"window: cannot open a window: {exc}") from None
        return self._screen

    def pump(self) -> None:
        """Handle pending window events (call between frames if frames are sparse)."""
        pg = self._pg
        for event in pg.event.get():
            if event.type == pg.QUIT:
                if not self.quit_requested:
                    logger.info("window %r: closed by the user", self.title)
                self.quit_requested = True
            elif event.type == pg.KEYDOWN and event.key == pg.K_ESCAPE and self.fullscreen:
                self.quit_requested = True

    def write(self, frame: av.VideoFrame) -> None:
        """Show one frame."""
        if self._closed:
            return
        pg = self._pg
        screen = self._ensure_screen(frame.width, frame.height)
        sw, sh = screen.get_size()
        scale = min(sw / frame.width, sh / frame.height)
        w = max(2, round(frame.width * scale) & ~1)
        h = max(2, round(frame.height * scale) & ~1)
        # swscale does YUV→RGB and the scaling in one pass.
        rgb = frame.to_ndarray(width=w, height=h, format="rgb24")
        surface = pg.image.frombuffer(np.ascontiguousarray(rgb), (w, h), "RGB")
        if (w, h) != (sw, sh):
            screen.fill((0, 0, 0))
        screen.blit(surface, ((sw - w) // 2, (sh - h) // 2))
        pg.display.flip()
        self.frames += 1
        self.pump()

    def close(self) -> None:
        """Close the window."""
        if self._closed:
            return
        self._closed = True
        self._pg.display.quit()


# -- audio sinks ----------------------------------------------------------------------------


class NullAudioSink:
    """Discards audio, counting frames and samples."""

    def __init__(self) -> None:
        self.frames = 0
        """Frames written."""
        self.samples = 0
        """Samples written (per channel)."""

    def write(self, frame: av.AudioFrame) -> None:
        """Count the frame."""
        self.frames += 1
        self.samples += frame.samples

    def close(self) -> None:
        """Nothing to release."""


class WavAudioSink:
    """Writes audio to a 48 kHz mono s16 WAV file; other formats, layouts (stereo is
    downmixed) and rates are converted."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.samples = 0
        """Samples written."""
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._wav = wave.open(path, "wb")
        except OSError as exc:
            raise DeviceError(f"audio file {path!r}: cannot create: {exc}") from None
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)
        self._resampler: av.AudioResampler | None = None
        self._input_kind: tuple[str, str, int] | None = None
        self._closed = False

    def _convert(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if kind == ("s16", "mono", SAMPLE_RATE):
            return [frame]
        if kind != self._input_kind or self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            self._input_kind = kind
        return list(self._resampler.resample(frame))

    def write(self, frame: av.AudioFrame) -> None:
        """Append one frame."""
        if self._closed:
            raise DeviceError(f"audio file {self.path!r}: sink is closed")
        for f in self._convert(frame):
            samples = f.to_ndarray().reshape(-1).astype("<i2", copy=False)
            self._wav.writeframes(samples.tobytes())
            self.samples += samples.size

    def close(self) -> None:
        """Finish the file (writes the header's lengths)."""
        if self._closed:
            return
        self._closed = True
        if self._resampler is not None:
            for f in self._resampler.resample(None):
                samples = f.to_ndarray().reshape(-1).astype("<i2", copy=False)
                self._wav.writeframes(samples.tobytes())
                self.samples += samples.size
        self._wav.close()


# -- sink factories -------------------------------------------------------------------------


def open_video_sink(cfg: SinkConfig, title: str, *, fps: float = 15.0) -> VideoSink:
    """The classroom screen described by ``cfg``; ``title`` names the window, ``fps`` is the
    nominal rate of a ``file`` sink (used only for frames without ``pts``). ``device``: the
    classroom display with a status strip (:class:`edge_agent.screen.ScreenVideoSink`)."""
    if cfg.kind == "device":
        return ScreenVideoSink(title, fullscreen=cfg.fullscreen)
    if cfg.kind == "window":
        return WindowVideoSink(fullscreen=cfg.fullscreen, title=title)
    if cfg.kind == "file":
        assert cfg.path is not None
        return FileVideoSink(cfg.path, fps)
    return NullVideoSink()


def open_audio_sink(cfg: SinkConfig) -> AudioSink:
    """The classroom speakers described by ``cfg`` (``file``: a WAV file; ``device`` or
    ``window``: the sound card, :class:`edge_agent.speakers.SpeakerAudioSink`)."""
    if cfg.kind == "file":
        assert cfg.path is not None
        return WavAudioSink(cfg.path)
    if cfg.kind in ("device", "window"):
        return SpeakerAudioSink(cfg.name, cfg.index, target_ms=cfg.buffer_ms,
                                max_ms=max(200.0, 3 * cfg.buffer_ms))
    return NullAudioSink()
