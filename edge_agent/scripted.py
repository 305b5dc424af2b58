"""A scripted microphone: recorded clips (e.g. espeak-ng speech) played at given wall-clock
times, silence in between. Lessons with a known ground truth (who speaks when) use it.

The schedule is a JSON file::

    {"segments": [{"start_ms": 1767225600000, "clip": "teacher.wav"}, ...]}

``start_ms`` is epoch milliseconds; ``clip`` a media file (relative paths are relative to
the schedule). Clips are decoded once, to 48 kHz mono s16. A sample due at epoch time
``t`` plays the clip whose segment covers ``t``; overlapping segments mix. The file is
re-read when it changes (checked every :data:`RELOAD_CHECK_S`), so a rehearsal or a test
can write the schedule once everyone has joined; a broken new version is logged and the
previous one kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from syncclass.errors import DeviceError

from .pacing import AUDIO_FRAME_SAMPLES, SAMPLE_RATE, SamplePacer, audio_frame

logger = logging.getLogger(__name__)

RELOAD_CHECK_S = 0.5


@dataclass(frozen=True)
class ScheduledClip:
    start_ms: int
    """Epoch ms when the clip starts playing."""
    samples: npt.NDArray[np.int16]
    """48 kHz mono samples."""

    @property
    def end_ms(self) -> int:
        return self.start_ms + len(self.samples) * 1000 // SAMPLE_RATE


def decode_clip(path: Path) -> npt.NDArray[np.int16]:
    """A media file's first audio stream as 48 kHz mono int16 samples."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DeviceError(f"clip {str(path)!r}: has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            parts: list[npt.NDArray[Any]] = []
            for frame in container.decode(audio=0):
                parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except (av.FFmpegError, OSError) as exc:
        raise DeviceError(f"clip {str(path)!r}: cannot decode: {exc}") from None
    if not parts:
        raise DeviceError(f"clip {str(path)!r}: no audio")
    return np.concatenate(parts).astype(np.int16, copy=False)


def load_schedule(path: str) -> list[ScheduledClip]:
    """Read a schedule JSON; raises :class:`DeviceError` naming what is wrong."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeviceError(f"speech schedule {path!r}: cannot read: {exc}") from None
    segments = data.get("segments") if isinstance(data, dict) else None
    if not isinstance(segments, list):
        raise DeviceError(f"speech schedule {path!r}: needs a 'segments' list")
    cache: dict[Path, npt.NDArray[np.int16]] = {}
    out = []
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict) or not isinstance(seg.get("start_ms"), int) or not (
            isinstance(seg.get("clip"), str)
        ):
            raise DeviceError(f"speech schedule {path!r}: segments[{i}] needs integer "
                              "'start_ms' and string 'clip'")
        clip = (p.parent / seg["clip"]).resolve()
        if clip not in cache:
            cache[clip] = decode_clip(clip)
        out.append(ScheduledClip(seg["start_ms"], cache[clip]))
    return sorted(out, key=lambda c: c.start_ms)


class ScriptedAudioSource:
    """Plays :class:`ScheduledClip` s at their wall-clock times, paced in real time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = self._stat()
        self.clips = load_schedule(path)
        self.reloads = 0
        """Times a changed schedule was loaded."""
        self._pacer = SamplePacer(f"speech schedule {path!r}")
        self._frames_to_check = 0

    def _stat(self) -> int:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return 0

    def _maybe_reload(self) -> None:
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self.clips = load_schedule(self.path)
            self.reloads += 1
            logger.info("speech schedule %r reloaded: %d clip(s)", self.path, len(self.clips))
        except DeviceError as exc:
            logger.warning("%s; keeping the previous schedule", exc)

    def samples_at(self, t0_ms: float, count: int = AUDIO_FRAME_SAMPLES) -> npt.NDArray[np.int16]:
        """``count`` samples starting at epoch time ``t0_ms``."""
        out = np.zeros(count, dtype=np.int32)
        t1_ms = t0_ms + count * 1000 / SAMPLE_RATE
        for clip in self.clips:
            if clip.start_ms >= t1_ms or clip.end_ms <= t0_ms:
                continue
            first = round((t0_ms - clip.start_ms) * SAMPLE_RATE / 1000)
            lo, hi = max(0, first), min(len(clip.samples), first + count)
            if hi > lo:
                out[lo - first : hi - first] += clip.samples[lo:hi]
        return np.clip(out, -32768, 32767).astype(np.int16)

    async def read(self) -> av.AudioFrame:
        """The next 20 ms frame, paced in real time."""
        n0 = await self._pacer.next()
        self._frames_to_check -= 1
        if self._frames_to_check <= 0:
            self._frames_to_check = round(RELOAD_CHECK_S * SAMPLE_RATE / AUDIO_FRAME_SAMPLES)
            await asyncio.to_thread(self._maybe_reload)
        assert self._pacer.start_epoch is not None
        t0_ms = self._pacer.start_epoch * 1000 + n0 * 1000 / SAMPLE_RATE
        return audio_frame(self.samples_at(t0_ms), n0)

    def close(self) -> None:
        """Nothing to release."""
