"""Audio mixing math and level/spectrum measurement (pure numpy).

Blocks are mono signed 16-bit PCM (``int16``) of equal length, typically 20 ms at
48 kHz (960 samples). Levels are in dBov (RMS relative to the RMS of a full-scale square
wave, RFC 6464 style: a full-scale sine reads about -3 dBov); spectrum magnitudes are in
dB relative to a full-scale sine (a full-scale sine's peak reads about 0 dB).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

#: Level reported for digital silence, in dBov (RFC 6464's floor).
SILENCE_DBOV = -127.0

_INT16_MAX = 32767
_INT16_MIN = -32768
# Above this magnitude the limiter bends the mix smoothly towards full scale instead of
# hard clipping; below it samples pass unchanged.
_LIMITER_KNEE = 24576


def _as_block(name: str, samples: np.ndarray) -> npt.NDArray[np.int16]:
    """Validate one input block: int16, mono, shape ``(n,)`` or ``(1, n)``."""
    if samples.dtype != np.int16:
        raise ValueError(f"audio input {name!r} must be int16, got {samples.dtype}")
    if samples.ndim == 2 and samples.shape[0] == 1:
        samples = samples.reshape(-1)
    if samples.ndim != 1:
        raise ValueError(f"audio input {name!r} must be mono, got shape {samples.shape}")
    return samples


def limit_to_int16(mix: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    """Bring a summed mix back to int16 without wrap-around.

    Samples within ±24576 (about -2.5 dBFS) pass unchanged; louder ones are compressed
    with a tanh curve that approaches full scale, so overlapping loud talkers distort far
    less than with a hard clip. Costs one ``abs().max()`` when nothing is loud.
    """
    if mix.size == 0:
        return mix.astype(np.int16)
    peak = int(np.max(np.abs(mix)))
    if peak <= _LIMITER_KNEE:
        return mix.astype(np.int16)
    x = mix.astype(np.float64)
    mag = np.abs(x)
    headroom = _INT16_MAX - _LIMITER_KNEE
    over = mag > _LIMITER_KNEE
    mag[over] = _LIMITER_KNEE + headroom * np.tanh((mag[over] - _LIMITER_KNEE) / headroom)
    out = np.clip(np.rint(np.copysign(mag, x)), _INT16_MIN, _INT16_MAX)
    return out.astype(np.int16)


def mix_n_minus_1(
    inputs: Mapping[str, np.ndarray | None],
    listeners: Iterable[str],
    *,
    block_samples: int | None = None,
) -> tuple[npt.NDArray[np.int16], dict[str, npt.NDArray[np.int16]]]:
    """Mix every input, and for each listener everything except its own input.

    ``inputs`` maps a source id to an int16 mono block, or None when that source is
    silent or missing. Returns ``(full, per_listener)``: ``full`` is the sum of all
    inputs, ``per_listener[id]`` the sum without ``inputs[id]`` (a listener with no input
    hears the full mix). The total is summed once in int32 and each listener's own block
    subtracted, so cost is O(sources + listeners) blocks; results pass through
    :func:`limit_to_int16`.

    ``block_samples`` fixes the block length (samples); it is required when every input is
    None, and otherwise checked against the inputs. Raises ``ValueError`` on a wrong dtype,
    shape or length.
    """
    blocks: dict[str, npt.NDArray[np.int16]] = {}
    for name, samples in inputs.items():
        if samples is not None:
            blocks[name] = _as_block(name, samples)
    lengths = {len(b) for b in blocks.values()}
    if block_samples is not None:
        lengths.add(block_samples)
    if not lengths:
        raise ValueError("cannot infer the block length: every input is None")
    if len(lengths) > 1:
        raise ValueError(f"audio blocks differ in length: {sorted(lengths)} samples")
    (length,) = lengths

    total = np.zeros(length, dtype=np.int32)
    for block in blocks.values():
        total += block
    full = limit_to_int16(total)
    per_listener: dict[str, npt.NDArray[np.int16]] = {}
    for listener in listeners:
        own = blocks.get(listener)
        if own is None:
            per_listener[listener] = full
        else:
            per_listener[listener] = limit_to_int16(total - own)
    return full, per_listener


def _to_float(samples: np.ndarray) -> npt.NDArray[np.float64]:
    """Samples scaled so full scale is 1.0 (integers by their type's range)."""
    arr = np.asarray(samples)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"expected mono samples, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max + 1)
    return arr.astype(np.float64)


def level_dbov(samples: np.ndarray) -> float:
    """RMS level in dBov: 0 for a full-scale square wave, ``SILENCE_DBOV`` (-127) for silence.

    Integer samples are relative to their type's full scale, float samples to 1.0.
    The result is clamped to [-127, 0].
    """
    x = _to_float(samples)
    if x.size == 0:
        return SILENCE_DBOV
    rms = float(np.sqrt(np.mean(x * x)))
    if rms <= 0.0:
        return SILENCE_DBOV
    return float(min(0.0, max(SILENCE_DBOV, 20.0 * np.log10(rms))))


def _spectrum(
    samples: np.ndarray, sample_rate: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Hann-windowed one-sided spectrum: (bin frequencies Hz, complex-magnitude², window)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x = _to_float(samples)
    if x.size < 4:
        raise ValueError(f"need at least 4 samples for a spectrum, got {x.size}")
    window = np.hanning(x.size).astype(np.float64)
    power = (np.abs(np.fft.rfft(x * window)) ** 2).astype(np.float64)
    freqs = np.fft.rfftfreq(x.size, 1.0 / sample_rate).astype(np.float64)
    return freqs, power, window


def spectrum_peaks(
    samples: np.ndarray,
    sample_rate: int,
    count: int = 5,
    min_separation_hz: float = 50,
) -> list[tuple[float, float]]:
    """The ``count`` strongest spectral peaks as ``(freq_hz, magnitude_db)``, strongest first.

    Magnitudes are dB relative to a full-scale sine (which reads about 0 dB); frequencies are
    refined by parabolic interpolation between FFT bins (Hann window), so resolution is
    far better than ``sample_rate / len(samples)`` for isolated tones. Peaks closer than
    ``min_separation_hz`` to a stronger one are skipped; DC is ignored. Silence → ``[]``.
    """
    freqs, power, window = _spectrum(samples, sample_rate)
    # Amplitude spectrum scaled so a sine of amplitude A peaks at A.
    mag = np.sqrt(power) * 2.0 / float(window.sum())
    if mag.size < 3 or not np.any(mag[1:] > 0):
        return []
    inner = mag[1:-1]
    is_peak = (inner > mag[:-2]) & (inner >= mag[2:]) & (inner > 0)
    candidates = np.nonzero(is_peak)[0] + 1
    order = candidates[np.argsort(-mag[candidates], kind="stable")]
    bin_hz = float(freqs[1] - freqs[0])
    db = 20.0 * np.log10(np.maximum(mag, 1e-300))
    peaks: list[tuple[float, float]] = []
    for k in order:
        a, b, c = db[k - 1], db[k], db[k + 1]
        denom = a - 2.0 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
        freq = (float(k) + offset) * bin_hz
        level = float(b - 0.25 * (a - c) * offset)
        if level < SILENCE_DBOV:
            break
        if any(abs(freq - f) < min_separation_hz for f, _ in peaks):
            continue
        peaks.append((freq, level))
        if len(peaks) >= count:
            break
    return peaks


def band_level_db(
    samples: np.ndarray, sample_rate: int, freq_hz: float, width_hz: float = 20
) -> float:
    """Power in a band around ``freq_hz``, in dB relative to a full-scale sine.

    A full-scale sine at ``freq_hz`` reads about 0 dB, one at -20 dBFS about -20 dB; an
    absent tone reads far lower (-127 floor). The band is ``freq_hz ± width_hz / 2`` but
    never narrower than ±2 FFT bins (the Hann window's main lobe), so short blocks still
    capture the whole tone.
    """
    freqs, power, window = _spectrum(samples, sample_rate)
    bin_hz = float(freqs[1] - freqs[0])
    half = max(width_hz / 2.0, 2.0 * bin_hz)
    band = (freqs >= freq_hz - half) & (freqs <= freq_hz + half)
    # Parseval: a sine of amplitude A gives sum(one-sided |X|^2) ≈ N * A^2/4 * sum(w^2)/N.
    n = window.size
    energy = float(power[band].sum()) / n
    mean_square = 2.0 * energy / float(np.sum(window * window))  # ≈ A^2 / 2
    if mean_square <= 0.0:
        return SILENCE_DBOV
    return float(max(SILENCE_DBOV, 10.0 * np.log10(mean_square / 0.5)))


class BeepDetector:
    """Finds the onsets of a sine beep (e.g. the synthetic sources' 3000 Hz sync marks)
    in a stream of blocks, to measure audio mouth-to-ear latency.

    Each block is split into windows of ``window`` samples (2.5 ms at 48 kHz); a window's
    amplitude at ``beep_hz`` (single-bin DFT) above ``on_level`` (fraction of full scale)
    starts a beep, and the beep ends after ``off_windows`` windows below ``off_level``.
    """

    def __init__(self, sample_rate: int = 48000, beep_hz: float = 3000.0, window: int = 120,
                 on_level: float = 0.08, off_level: float = 0.04, off_windows: int = 8) -> None:
        self.sample_rate = sample_rate
        self.window = window
        self.on_level = on_level
        self.off_level = off_level
        self.off_windows = off_windows
        t = np.arange(window) / sample_rate
        self._kernel = np.exp(-2j * np.pi * beep_hz * t) * (2.0 / window / 32768.0)
        self._in_beep = False
        self._quiet = 0

    def feed(self, samples: np.ndarray, end_ms: float) -> list[float]:
        """Feed one int16 mono block whose last sample was heard at ``end_ms`` (epoch ms);
        returns the epoch-ms times of beep onsets that begin in this block."""
        n = len(samples) // self.window
        if n == 0:
            return []
        frames = samples[: n * self.window].reshape(n, self.window).astype(np.float64)
        amplitude = np.abs(frames @ self._kernel)
        onsets: list[float] = []
        for i, a in enumerate(amplitude):
            if not self._in_beep:
                if a >= self.on_level:
                    self._in_beep = True
                    self._quiet = 0
                    start = i * self.window
                    onsets.append(end_ms - (len(samples) - start) * 1000.0 / self.sample_rate)
            elif a < self.off_level:
                self._quiet += 1
                if self._quiet >= self.off_windows:
                    self._in_beep = False
            else:
                self._quiet = 0
        return onsets
