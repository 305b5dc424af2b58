"""A simulated classroom for echo-cancellation tests and benchmarks: real speech from
espeak-ng, a loudspeaker → microphone path with delay, attenuation and reverberation, and
near-end speech and noise at the microphone.

All signals are 48 kHz mono float arrays in full scale (±1.0) unless named ``*_i16``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

RATE = 48000
FRAME = 960

FAR_TEXT = ("The area of a rectangle is its length times its width. Let us look at the next "
            "example on the board, and everyone please write down the answer in your "
            "notebooks. Now we will read the poem together, one line at a time.")
NEAR_TEXT = "老师，我知道答案，长方形的面积等于长乘以宽。我们一起读这首诗，一句一句地读。"

Signal = npt.NDArray[np.float64]


def speech(text: str, voice: str, speed_wpm: int = 150) -> Signal:
    """``text`` spoken by espeak-ng (``voice``), resampled to 48 kHz, peak-normalised."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (scripts/bootstrap.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed_wpm), "-w", str(wav), text],
                       check=True, capture_output=True, timeout=60)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        chunks: list[npt.NDArray[Any]] = []
        with av.open(str(wav)) as container:
            for frame in container.decode(audio=0):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    x = np.concatenate(chunks).astype(np.float64) / 32768
    return x / max(1e-9, float(np.abs(x).max()))


def fit(x: Signal, seconds: float) -> Signal:
    """``x`` looped or cut to ``seconds``."""
    n = int(seconds * RATE)
    reps = -(-n // len(x))
    return np.tile(x, reps)[:n]


@dataclass(frozen=True)
class Room:
    """Loudspeaker → microphone path: a direct sound after ``delay_ms`` (device buffering +
    flight time) with gain ``gain``, then a diffuse tail decaying by 60 dB in ``rt60_ms``
    whose energy is ``tail_db`` relative to the direct sound."""

    delay_ms: float = 40.0
    gain: float = 0.5
    rt60_ms: float = 300.0
    tail_db: float = -3.0
    seed: int = 7

    def impulse_response(self) -> Signal:
        rng = np.random.default_rng(self.seed)
        d = int(self.delay_ms * RATE / 1000)
        n_tail = int(self.rt60_ms * RATE / 1000)
        t = np.arange(n_tail) / RATE
        tail = rng.standard_normal(n_tail) * 10 ** (-3 * t / (self.rt60_ms / 1000))
        tail[: int(0.002 * RATE)] = 0  # first reflections arrive after the direct sound
        tail *= 10 ** (self.tail_db / 20) / np.sqrt(np.sum(tail**2))
        ir = np.zeros(d + n_tail)
        ir[d] = 1.0
        ir[d:] += tail
        return ir * self.gain

    def echo(self, played: Signal) -> Signal:
        """What the microphone hears of ``played``."""
        ir = self.impulse_response()
        n = len(played)
        size = 1 << int(np.ceil(np.log2(n + len(ir))))
        y = np.fft.irfft(np.fft.rfft(played, size) * np.fft.rfft(ir, size), size)
        return y[:n]


def to_i16(x: Signal) -> npt.NDArray[np.int16]:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def energy_db(x: Signal) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def best_lag_correlation(out: Signal, ref: Signal, max_lag: int = 2400) -> tuple[int, float]:
    """The lag (samples, ``out`` later than ``ref``) maximising the normalised correlation
    of the two, and that correlation."""
    n = len(ref)
    best = (0, -1.0)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xc = np.fft.irfft(np.fft.rfft(out[:n], size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.r_[0:max_lag]
    k = int(lags[np.argmax(xc[lags])])
    a, b = out[k : k + n - max_lag], ref[: n - max_lag]
    c = float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b) + 1e-20))
    if c > best[1]:
        best = (k, c)
    return best
