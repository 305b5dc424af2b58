"""The classroom loudspeakers: a steady output buffer feeding a sounddevice (PortAudio)
output stream, and the hand-over of what is played to the echo canceller.

Network audio arrives in bursts; a sound card pulls samples at its own steady pace.
:class:`PlayoutBuffer` sits between them: playback starts once ``target_ms`` is buffered;
an empty buffer plays silence (an *underrun*, counted) and re-primes to the target;
more than ``max_ms`` buffered drops the oldest samples (an *overflow*, counted), so the
delay never grows. :class:`SpeakerAudioSink` plays the buffer on a PortAudio output
device and passes every block it hands to the device to its ``on_played`` listeners (the
echo canceller's reference), from PortAudio's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from syncclass.errors import DeviceError

from .device_list import find_audio_device

__all__ = ["PlayoutBuffer", "SpeakerAudioSink"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
"""Playback rate, Hz."""
BLOCK_SAMPLES = 960
"""Samples PortAudio asks for per callback (20 ms)."""

PlayedListener = Callable[[npt.NDArray[np.int16]], None]


class PlayoutBuffer:
    """A thread-safe ring buffer of 48 kHz mono ``int16`` samples with a target fill.

    :meth:`write` (network side) and :meth:`read` (sound card side) may run on different
    threads.
    """

    def __init__(self, target_ms: float = 60.0, max_ms: float = 200.0) -> None:
        if not 0 < target_ms < max_ms:
            raise ValueError(f"target_ms {target_ms} must be > 0 and below max_ms {max_ms}")
        self.target = int(target_ms * SAMPLE_RATE / 1000)
        """Fill at which playback (re)starts, samples."""
        self.capacity = int(max_ms * SAMPLE_RATE / 1000)
        """Most samples held; beyond, the oldest are dropped."""
        self._ring = np.zeros(self.capacity, np.int16)
        self._start = 0
        self._fill = 0
        self._playing = False
        self._lock = threading.Lock()
        self.underruns = 0
        """Reads that found too few samples (silence played)."""
        self.underrun_samples = 0
        """Samples of silence played because the buffer ran dry or was priming."""
        self.dropped_samples = 0
        """Samples dropped (oldest first) because the buffer was full."""
        self.written_samples = 0
        self.played_samples = 0
        """Samples of real audio handed to the device."""

    @property
    def fill_ms(self) -> float:
        """Audio waiting to be played, ms."""
        return self._fill * 1000 / SAMPLE_RATE

    def write(self, samples: npt.NDArray[np.int16]) -> None:
        """Queue samples; if that passes the capacity, drop the oldest."""
        x = np.asarray(samples, dtype=np.int16).reshape(-1)
        with self._lock:
            self.written_samples += len(x)
            if len(x) >= self.capacity:
                self.dropped_samples += self._fill + len(x) - self.capacity
                x = x[-self.capacity :]
                self._start, self._fill = 0, 0
            over = self._fill + len(x) - self.capacity
            if over > 0:
                self._start = (self._start + over) % self.capacity
                self._fill -= over
                self.dropped_samples += over
            end = (self._start + self._fill) % self.capacity
            first = min(len(x), self.capacity - end)
            self._ring[end : end + first] = x[:first]
            self._ring[: len(x) - first] = x[first:]
            self._fill += len(x)

    def read(self, count: int) -> npt.NDArray[np.int16]:
        """``count`` samples to play now: real audio, or silence while (re)priming."""
        out = np.zeros(count, np.int16)
        with self._lock:
            if not self._playing:
                if self._fill < self.target:
                    self.underrun_samples += count
                    return out
                self._playing = True
            take = min(count, self._fill)
            first = min(take, self.capacity - self._start)
            out[:first] = self._ring[self._start : self._start + first]
            out[first:take] = self._ring[: take - first]
            self._start = (self._start + take) % self.capacity
            self._fill -= take
            self.played_samples += take
            if take < count:
                self.underruns += 1
                self.underrun_samples += count - take
                self._playing = False  # re-prime to the target before playing on
        return out

    def stats(self) -> dict[str, float | int]:
        return {"fill_ms": round(self.fill_ms, 1), "target_ms": self.target * 1000 // SAMPLE_RATE,
                "underruns": self.underruns, "underrun_samples": self.underrun_samples,
                "dropped_samples": self.dropped_samples, "played_samples": self.played_samples}


class SpeakerAudioSink:
    """Plays received audio on a PortAudio output device through a :class:`PlayoutBuffer`.

    ``name``/``index`` choose the device (see :func:`find_audio_device`; neither: the
    default output). If the device fails or disappears while playing, the sink keeps
    accepting frames (they go nowhere audible) and tries to reopen the device every
    ``retry_s`` seconds; it never raises from :meth:`write`.
    """

    def __init__(self, name: str | None = None, index: int | None = None, *,
                 target_ms: float = 60.0, max_ms: float = 200.0, retry_s: float = 3.0) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as exc:
            raise DeviceError(f"speakers: sounddevice/PortAudio is not available: {exc}"
                              ) from None
        self._sd: Any = sounddevice
        self._want = (name, index)
        self.buffer = PlayoutBuffer(target_ms, max_ms)
        self.retry_s = retry_s
        self.device_index, self.device_name = find_audio_device(sounddevice, name, index,
                                                                "output")
        self.callbacks = 0
        """PortAudio callbacks served (each one 20 ms block)."""
        self.output_underflows = 0
        """Blocks PortAudio flagged as output underflow (the device starved)."""
        self.reopens = 0
        self._listeners: list[PlayedListener] = []
        self._stream: Any = None
        self._resampler: av.AudioResampler | None = None
        self._input_kind: tuple[str, str, int] | None = None
        self._last_attempt = 0.0
        self._closed = False
        self._open()  # a missing device at start is a configuration error: raise

    def add_played_listener(self, listener: PlayedListener) -> None:
        """Call ``listener(block)`` with each block handed to the device (PortAudio thread;
        keep it short and thread-safe)."""
        self._listeners.append(listener)

    @property
    def playing(self) -> bool:
        """The output stream is open and running."""
        return self._stream is not None and bool(self._stream.active)

    def _open(self) -> None:
        self._last_attempt = time.monotonic()
        try:
            stream = self._sd.OutputStream(
                samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=BLOCK_SAMPLES,
                device=self.device_index, callback=self._callback, latency="low",
            )
            stream.start()
        except Exception as exc:  # PortAudioError, ValueError
            raise DeviceError(f"speakers {self.device_name!r}: cannot open: {exc}") from None
        self._stream = stream
        logger.info("speakers %r: playing (device latency %.0f ms)", self.device_name,
                    float(stream.latency) * 1000)

    def _retry(self) -> None:
        if time.monotonic() - self._last_attempt < self.retry_s:
            return
        old, self._stream = self._stream, None
        if old is not None:
            try:
                old.close(ignore_errors=True)
            except Exception as exc:
                logger.debug("speakers: closing the failed stream: %s", exc)
        try:
            self.device_index, self.device_name = find_audio_device(self._sd, *self._want,
                                                                    "output")
            self._open()
            self.reopens += 1
        except DeviceError as exc:
            logger.warning("%s; retrying in %.0f s", exc, self.retry_s)

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio thread.
        if status and status.output_underflow:
            self.output_underflows += 1
        block = self.buffer.read(frames)
        outdata[:, 0] = block
        self.callbacks += 1
        for listener in self._listeners:
            try:
                listener(block)
            except Exception:
                logger.exception("speakers: played-audio listener failed")

    def _convert(self, frame: av.AudioFrame) -> list[npt.NDArray[np.int16]]:
        kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if kind == ("s16", "mono", SAMPLE_RATE):
            return [frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)]
        if kind != self._input_kind or self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            self._input_kind = kind
        return [f.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                for f in self._resampler.resample(frame)]

    def write(self, frame: av.AudioFrame) -> None:
        """Queue one received frame for playback (any format, layout and rate)."""
        if self._closed:
            return
        for samples in self._convert(frame):
            self.buffer.write(samples)
        if not self.playing:
            self._retry()

    def stats(self) -> dict[str, Any]:
        return {"device": self.device_name, "playing": self.playing,
                "callbacks": self.callbacks, "output_underflows": self.output_underflows,
                "reopens": self.reopens, **self.buffer.stats()}

    def close(self) -> None:
        """Stop and close the output stream; idempotent."""
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception as exc:
                logger.warning("speakers %r: error on close: %s", self.device_name, exc)
