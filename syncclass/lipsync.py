"""Lip sync: each classroom's audio is delayed to match the age of its video.

The mixer composes the latest decoded picture of every classroom at its own frame ticks,
so a picture waits up to one frame interval (67 ms at 15 fps) for its tick, on top of a
video path (encode, packets of a frame, decode) slower than audio's. Audio, mixed every
20 ms from a short FIFO, would otherwise run ahead of the picture by a lesson-long,
run-to-run random amount (measured: -34 to +50 ms in the recording).

The ages come from the senders' clocks, as in any RTP receiver: an RTCP sender report
maps an RTP timestamp to the sender's NTP time (:class:`SenderClock`), so a decoded frame's
RTP timestamp tells when it was captured, on the sender's clock. The *age* of media where
the mixer uses it (local time minus sender capture time) carries the unknown offset
between the two machines' clocks, but audio and video of one classroom share it, so their
difference is the real lip-sync error. :class:`LipSync` turns that difference into a small
change of how many samples the mixer takes from the classroom's FIFO per 20 ms block
(:func:`stretch` resamples them to a block), so audio is delayed or caught up smoothly,
at most 5 % faster or slower, without clicks or gaps.

Only audio moves: video is the slower path in practice, and delaying audio costs memory
only. Audio older than its video cannot be made younger: it is caught up to the FIFO's
minimum and the rest is reported (``error_ms``).
"""

from __future__ import annotations

import math

import numpy as np

NTP_EPOCH_OFFSET = 2208988800
"""Seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)."""


def ntp_to_seconds(ntp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point) → Unix seconds."""
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / 2**32


class SenderClock:
    """An RTP stream's timestamps on its sender's wall clock, from RTCP sender reports."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self._ntp_s: float | None = None
        self._rtp = 0
        self.reports = 0

    def update(self, ntp_s: float, rtp_timestamp: int) -> None:
        """A sender report: ``rtp_timestamp`` corresponds to ``ntp_s`` (Unix seconds)."""
        self._ntp_s = ntp_s
        self._rtp = rtp_timestamp & 0xFFFFFFFF
        self.reports += 1

    def time_of(self, rtp_timestamp: int) -> float | None:
        """Sender time (Unix seconds) of ``rtp_timestamp``; None before the first report."""
        if self._ntp_s is None:
            return None
        delta = ((rtp_timestamp - self._rtp + 2**31) & 0xFFFFFFFF) - 2**31  # wraps
        return self._ntp_s + delta / self.clock_rate


class LipSync:
    """How many samples to take from one classroom's audio FIFO for the next block.

    Feed it the age of the classroom's picture in each composed frame
    (:meth:`observe_video`) and the age of the audio at the start of each mixed block
    (:meth:`observe_audio`), both as local time minus sender capture time in seconds.
    :meth:`take` answers how many samples to consume for an ``n``-sample block: more than
    ``n`` to catch up, fewer to fall back. Correction starts when the error exceeds
    ``deadband_s`` and stops within ``settle_s`` (hysteresis), so a steady stream is left
    untouched.
    """

    def __init__(self, deadband_s: float = 0.012, settle_s: float = 0.003,
                 max_rate: float = 0.05, video_smoothing: float = 0.1,
                 max_video_age_s: float = 0.5, sample_rate: int = 48000) -> None:
        self.deadband_s = deadband_s
        self.sample_rate = sample_rate
        self.settle_s = settle_s
        self.max_rate = max_rate
        self.video_smoothing = video_smoothing
        self.max_video_age_s = max_video_age_s
        self.video_age: float | None = None
        self.audio_age: float | None = None
        self.correcting = False
        self.samples_stretched = 0
        """Samples added (audio delayed) so far; negative: removed (caught up). Kept by
        the FIFO that applies :meth:`take`."""

    def observe_video(self, age_s: float) -> None:
        """A picture older than ``max_video_age_s`` is a frozen camera or a dead link, not a
        pipeline to wait for: correction pauses until fresh pictures come again."""
        if not math.isfinite(age_s) or age_s > self.max_video_age_s:
            self.video_age = None
            return
        if self.video_age is None or abs(age_s - self.video_age) > 1.0:
            self.video_age = age_s  # first sample, or the sender's clock jumped
        else:
            self.video_age += self.video_smoothing * (age_s - self.video_age)

    def observe_audio(self, age_s: float) -> None:
        if math.isfinite(age_s):
            self.audio_age = age_s

    def reset(self) -> None:
        self.video_age = self.audio_age = None
        self.correcting = False

    @property
    def error_s(self) -> float | None:
        """Video age minus audio age: > 0 while audio plays ahead of its picture."""
        if self.video_age is None or self.audio_age is None:
            return None
        return self.video_age - self.audio_age

    def take(self, n: int, available: int) -> int:
        """Samples to consume for an ``n``-sample block; ``available``: how many the FIFO
        can give up (what it holds less any reserve it keeps)."""
        error = self.error_s
        if error is None:
            return n
        if abs(error) <= self.settle_s:
            self.correcting = False
        elif abs(error) > self.deadband_s:
            self.correcting = True
        if not self.correcting:
            return n
        # Up to max_rate of a block per block: half speed for small errors.
        step = round(n * self.max_rate * (1.0 if abs(error) > 4 * self.deadband_s else 0.5))
        step = max(1, min(step, round(abs(error) * self.sample_rate)))
        if error > 0:  # audio ahead: consume fewer samples, the FIFO (and delay) grows
            return n - step
        # Audio behind: consume more, from what ``available`` holds beyond this block. At
        # the FIFO's floor there is nothing to catch up with: the block is taken unstretched.
        return n + min(step, max(0, available - n))


def stretch(block: np.ndarray, n: int) -> np.ndarray:
    """``block`` (int16 mono) resampled linearly to ``n`` samples: a 20 ms block stretched
    or squeezed by a few percent shifts pitch as little and, unlike dropping or repeating
    samples, leaves no discontinuity."""
    if len(block) == n:
        return block
    if len(block) < 2:
        return np.full(n, block[0] if len(block) else 0, dtype=np.int16)
    src = np.arange(len(block), dtype=np.float64)
    dst = np.linspace(0.0, len(block) - 1, n)
    return np.rint(np.interp(dst, src, block.astype(np.float64))).astype(np.int16)
