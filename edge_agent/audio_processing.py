"""Microphone processing for the classroom: acoustic echo cancellation (AEC) against what
the speakers play, noise suppression and automatic gain control, with SpeexDSP.

A classroom's omnidirectional microphone hears the loudspeakers; without AEC the far
classrooms hear themselves back. :class:`AudioProcessor` takes the agent's 20 ms, 48 kHz
``int16`` mono frames, runs SpeexDSP at 16 kHz (its echo canceller's usual rate: one third
of the work, and speech needs no more), and returns 20 ms, 48 kHz frames.

The binding is a small ``ctypes`` wrapper of the system's ``libspeexdsp`` (Debian
``libspeexdsp1``; on Windows a ``libspeexdsp.dll`` next to the agent or on ``PATH``), the
reference implementation maintained by Xiph.org. Nothing here needs a sound card: the
speaker sink hands the samples it plays to :meth:`AudioProcessor.feed_reference` (any
thread), the microphone path calls :meth:`AudioProcessor.process` (the event loop).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from syncclass.errors import DeviceError

__all__ = [
    "AudioProcessor",
    "AudioProcessorOptions",
    "SpeexEchoCanceller",
    "SpeexPreprocessor",
    "SpeexResampler",
    "load_speexdsp",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
"""Rate of the frames :class:`AudioProcessor` takes and returns, Hz."""
FRAME_SAMPLES = 960
"""Samples per frame at :data:`SAMPLE_RATE` (20 ms)."""

# speex_echo.h / speex_preprocess.h request numbers.
_ECHO_SET_SAMPLING_RATE = 24
_PP_SET_DENOISE = 0
_PP_SET_AGC = 2
_PP_SET_AGC_LEVEL = 6
_PP_SET_NOISE_SUPPRESS = 18
_PP_SET_ECHO_SUPPRESS = 20
_PP_SET_ECHO_SUPPRESS_ACTIVE = 22
_PP_SET_ECHO_STATE = 24
_PP_SET_AGC_MAX_GAIN = 30

_I16P = ctypes.POINTER(ctypes.c_int16)
_U32P = ctypes.POINTER(ctypes.c_uint32)

_lib: Any = None
_lib_lock = threading.Lock()


def load_speexdsp() -> Any:
    """The loaded ``libspeexdsp`` with argument types set (loaded once per process).

    Raises :class:`DeviceError` naming what to install when the library is missing.
    """
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        names = [ctypes.util.find_library("speexdsp"), "libspeexdsp.so.1", "libspeexdsp.dll",
                 "speexdsp.dll", "libspeexdsp.1.dylib"]
        lib = None
        errors = []
        for name in names:
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError as exc:
                errors.append(str(exc))
        if lib is None:
            hint = ("apt-get install libspeexdsp1" if sys.platform.startswith("linux")
                    else "put libspeexdsp.dll next to the agent or on PATH")
            raise DeviceError(f"audio processing: SpeexDSP library not found ({hint})")
        vp = ctypes.c_void_p
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_state_init.restype = vp
        lib.speex_echo_state_destroy.argtypes = [vp]
        lib.speex_echo_cancellation.argtypes = [vp, _I16P, _I16P, _I16P]
        lib.speex_echo_ctl.argtypes = [vp, ctypes.c_int, vp]
        lib.speex_echo_ctl.restype = ctypes.c_int
        lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_preprocess_state_init.restype = vp
        lib.speex_preprocess_state_destroy.argtypes = [vp]
        lib.speex_preprocess_run.argtypes = [vp, _I16P]
        lib.speex_preprocess_run.restype = ctypes.c_int
        lib.speex_preprocess_ctl.argtypes = [vp, ctypes.c_int, vp]
        lib.speex_preprocess_ctl.restype = ctypes.c_int
        lib.speex_resampler_init.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                             ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.speex_resampler_init.restype = vp
        lib.speex_resampler_destroy.argtypes = [vp]
        lib.speex_resampler_process_int.argtypes = [vp, ctypes.c_uint32, _I16P, _U32P, _I16P,
                                                    _U32P]
        lib.speex_resampler_process_int.restype = ctypes.c_int
        lib.speex_resampler_skip_zeros.argtypes = [vp]
        _lib = lib
        return lib


def _ptr(a: npt.NDArray[np.int16]) -> Any:
    return a.ctypes.data_as(_I16P)


class SpeexResampler:
    """Mono ``int16`` resampling with SpeexDSP's resampler (``quality`` 0-10)."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int, quality: int = 5) -> None:
        self._lib = load_speexdsp()
        err = ctypes.c_int(0)
        self._st = self._lib.speex_resampler_init(1, in_rate_hz, out_rate_hz, quality,
                                                  ctypes.byref(err))
        if not self._st or err.value:
            raise DeviceError(f"audio processing: speex_resampler_init failed ({err.value})")
        self.ratio = out_rate_hz / in_rate_hz

    def process(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Resample one block; the output length may differ by a sample between calls."""
        src = np.ascontiguousarray(samples, dtype=np.int16)
        out = np.empty(int(len(src) * self.ratio) + 16, dtype=np.int16)
        in_len = ctypes.c_uint32(len(src))
        out_len = ctypes.c_uint32(len(out))
        self._lib.speex_resampler_process_int(self._st, 0, _ptr(src), ctypes.byref(in_len),
                                              _ptr(out), ctypes.byref(out_len))
        return out[: out_len.value].copy()

    def close(self) -> None:
        """Free the state; idempotent."""
        if self._st:
            self._lib.speex_resampler_destroy(self._st)
            self._st = None


class SpeexEchoCanceller:
    """SpeexDSP's MDF echo canceller: ``frame_size`` samples per call at ``rate_hz``,
    an adaptive filter ``filter_length`` samples long (must cover the echo path: speaker
    and mic buffering + room reverberation)."""

    def __init__(self, frame_size: int, filter_length: int, rate_hz: int) -> None:
        self._lib = load_speexdsp()
        self.frame_size = frame_size
        self._st = self._lib.speex_echo_state_init(frame_size, filter_length)
        if not self._st:
            raise DeviceError("audio processing: speex_echo_state_init failed")
        rate = ctypes.c_int(rate_hz)
        self._lib.speex_echo_ctl(self._st, _ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._out = np.zeros(frame_size, dtype=np.int16)

    @property
    def state(self) -> Any:
        """The raw ``SpeexEchoState *`` (for the preprocessor's residual echo suppression)."""
        return self._st

    def cancel(self, mic: npt.NDArray[np.int16], played: npt.NDArray[np.int16]
               ) -> npt.NDArray[np.int16]:
        """The mic frame with the echo of ``played`` (same length, time-aligned) removed."""
        m = np.ascontiguousarray(mic, dtype=np.int16)
        p = np.ascontiguousarray(played, dtype=np.int16)
        if len(m) != self.frame_size or len(p) != self.frame_size:
            raise ValueError(f"echo canceller frames must be {self.frame_size} samples")
        out = np.empty(self.frame_size, dtype=np.int16)
        self._lib.speex_echo_cancellation(self._st, _ptr(m), _ptr(p), _ptr(out))
        return out

    def close(self) -> None:
        """Free the state; idempotent."""
        if self._st:
            self._lib.speex_echo_state_destroy(self._st)
            self._st = None


class SpeexPreprocessor:
    """SpeexDSP's preprocessor: noise suppression, AGC, and residual echo suppression
    when linked to a :class:`SpeexEchoCanceller`."""

    def __init__(self, frame_size: int, rate_hz: int, *, denoise: bool, agc: bool,
                 noise_suppress_db: int = -25, agc_level: float = 8000.0,
                 agc_max_gain_db: int = 20, echo: SpeexEchoCanceller | None = None,
                 echo_suppress_db: int = -45, echo_suppress_active_db: int = -15) -> None:
        self._lib = load_speexdsp()
        self.frame_size = frame_size
        self._st = self._lib.speex_preprocess_state_init(frame_size, rate_hz)
        if not self._st:
            raise DeviceError("audio processing: speex_preprocess_state_init failed")
        self._set_int(_PP_SET_DENOISE, int(denoise))
        self._set_int(_PP_SET_NOISE_SUPPRESS, noise_suppress_db)
        self._set_int(_PP_SET_AGC, int(agc))
        if agc:
            level = ctypes.c_float(agc_level)  # Debian's build is floating point
            self._lib.speex_preprocess_ctl(self._st, _PP_SET_AGC_LEVEL, ctypes.byref(level))
            self._set_int(_PP_SET_AGC_MAX_GAIN, agc_max_gain_db)
        if echo is not None:
            self._lib.speex_preprocess_ctl(self._st, _PP_SET_ECHO_STATE, echo.state)
            self._set_int(_PP_SET_ECHO_SUPPRESS, echo_suppress_db)
            self._set_int(_PP_SET_ECHO_SUPPRESS_ACTIVE, echo_suppress_active_db)

    def _set_int(self, request: int, value: int) -> None:
        v = ctypes.c_int(value)
        self._lib.speex_preprocess_ctl(self._st, request, ctypes.byref(v))

    def run(self, frame: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Process one frame (a copy is returned; the input is untouched)."""
        if len(frame) != self.frame_size:
            raise ValueError(f"preprocessor frames must be {self.frame_size} samples")
        out = np.array(frame, dtype=np.int16, copy=True)
        self._lib.speex_preprocess_run(self._st, _ptr(out))
        return out

    def close(self) -> None:
        """Free the state; idempotent."""
        if self._st:
            self._lib.speex_preprocess_state_destroy(self._st)
            self._st = None


@dataclass(frozen=True)
class AudioProcessorOptions:
    """What :class:`AudioProcessor` does to the microphone."""

    aec: bool = True
    """Cancel the echo of what the speakers play."""
    noise_suppression: bool = True
    """Suppress stationary noise (fans, projector hum) by up to ``noise_suppress_db``."""
    agc: bool = True
    """Automatic gain control towards ``agc_level`` (int16 RMS)."""
    rate_hz: int = 16000
    """Internal processing rate, Hz (frames are 20 ms at this rate)."""
    filter_ms: int = 300
    """Echo canceller filter length, ms: the longest echo tail it can cancel after the
    delay estimator has aligned the reference (``margin_ms`` + room reverberation)."""
    noise_suppress_db: int = -25
    """Maximum noise attenuation, dB (negative)."""
    echo_suppress_db: int = -45
    """Maximum residual echo attenuation when only the far end talks, dB (negative)."""
    echo_suppress_active_db: int = -15
    """Maximum residual echo attenuation during double talk, dB (negative)."""
    agc_level: float = 8000.0
    """AGC target level (int16 RMS)."""
    agc_max_gain_db: int = 20
    """AGC maximum gain, dB."""
    estimate_delay: bool = True
    """Find the speaker → microphone delay by cross-correlation and align the reference
    with it (devices report their latencies wrongly by tens of ms, more than an echo
    canceller tolerates: the reference must never lag its echo)."""
    margin_ms: int = 10
    """After alignment, the reference leads its echo by this much, ms."""
    max_delay_ms: int = 600
    """Longest speaker → microphone delay the estimator searches, ms."""


class AudioProcessor:
    """AEC + noise suppression + AGC on 20 ms, 48 kHz ``int16`` mono frames.

    :meth:`feed_reference` takes the samples the speakers play (48 kHz, any block size,
    thread-safe: the speaker sink calls it from PortAudio's thread); :meth:`process` takes
    one microphone frame and returns it cleaned.

    Pairing: microphone sample ``p`` (the frame's ``position``: its ``pts``, so dropped
    blocks leave gaps; else frames count on) is paired with reference sample ``p + D``.
    ``D`` starts as "the reference just played" and is then set by a delay estimator:
    every half second, when the speakers play something, the last second of microphone
    signal is cross-correlated with the last ``max_delay_ms`` of reference; a clear peak
    gives where the echo comes from, and ``D`` is moved so the reference leads the echo by
    ``margin_ms`` (two agreeing estimates are needed; each move is counted in
    :attr:`realignments`). Reference not (yet) available is silence, counted in
    :attr:`reference_underruns`. With every option off, frames pass through untouched.
    """

    _HISTORY_S = 2.0
    _ESTIMATE_EVERY = 25  # frames (0.5 s)
    _DECIMATE = 6  # the estimator works at 8 kHz
    _MAX_FILL = 10 * FRAME_SAMPLES  # lost mic blocks bridged with silence (longer: restart)

    def __init__(self, options: AudioProcessorOptions | None = None) -> None:
        self.options = options or AudioProcessorOptions()
        o = self.options
        if SAMPLE_RATE % o.rate_hz:
            raise ValueError(f"processing rate {o.rate_hz} Hz must divide {SAMPLE_RATE} Hz")
        if o.max_delay_ms > 1000 * self._HISTORY_S - 500:
            raise ValueError(f"max_delay_ms {o.max_delay_ms} must be below 1500")
        self.enabled = o.aec or o.noise_suppression or o.agc
        self.frames = 0
        """Microphone frames processed."""
        self.reference_underruns = 0
        """Frames processed with (partly) silent reference because it had not arrived."""
        self.realignments = 0
        """Times the delay estimator moved the pairing."""
        self.echo_delay_ms: float | None = None
        """Last estimated speaker → microphone delay relative to the initial pairing, ms."""
        self._frame = o.rate_hz // 50
        size = int(SAMPLE_RATE * self._HISTORY_S)
        self._ref = np.zeros(size, np.int16)  # ring: reference sample n at n % size
        self._ref_end = 0  # reference samples fed so far
        self._ref_lock = threading.Lock()
        self._mic = np.zeros(SAMPLE_RATE, np.int16)  # ring: last 1 s of raw microphone
        self._mic_end: int | None = None  # position after the last mic frame
        self._mic_first: int | None = None
        self._mic_next = 0  # position of the next frame when none is given
        self._offset: int | None = None  # D: reference sample = mic sample + D
        self._candidate: int | None = None
        self._echo: SpeexEchoCanceller | None = None
        self._pre: SpeexPreprocessor | None = None
        self._down_mic: SpeexResampler | None = None
        self._down_ref: SpeexResampler | None = None
        self._up: SpeexResampler | None = None
        self._mic_fifo = np.zeros(0, np.int16)
        self._ref_fifo = np.zeros(0, np.int16)
        self._out_fifo = np.zeros(0, np.int16)
        if not self.enabled:
            return
        if o.aec:
            self._echo = SpeexEchoCanceller(self._frame, o.rate_hz * o.filter_ms // 1000,
                                            o.rate_hz)
        self._pre = SpeexPreprocessor(
            self._frame, o.rate_hz, denoise=o.noise_suppression, agc=o.agc,
            noise_suppress_db=o.noise_suppress_db, agc_level=o.agc_level,
            agc_max_gain_db=o.agc_max_gain_db, echo=self._echo,
            echo_suppress_db=o.echo_suppress_db,
            echo_suppress_active_db=o.echo_suppress_active_db,
        )
        if o.rate_hz != SAMPLE_RATE:
            self._down_mic = SpeexResampler(SAMPLE_RATE, o.rate_hz)
            self._down_ref = SpeexResampler(SAMPLE_RATE, o.rate_hz)
            self._up = SpeexResampler(o.rate_hz, SAMPLE_RATE)

    # -- reference ---------------------------------------------------------------------------
    def feed_reference(self, samples: npt.NDArray[np.int16]) -> None:
        """Samples (48 kHz mono ``int16``) the speakers play now; call from any thread."""
        if self._echo is None:
            return
        block = np.asarray(samples, dtype=np.int16).reshape(-1)[-len(self._ref) :]
        with self._ref_lock:
            self._write_ring(self._ref, self._ref_end, block)
            self._ref_end += len(block)

    @staticmethod
    def _write_ring(ring: npt.NDArray[np.int16], end: int, block: npt.NDArray[np.int16]
                    ) -> None:
        size = len(ring)
        start = end % size
        first = min(len(block), size - start)
        ring[start : start + first] = block[:first]
        ring[: len(block) - first] = block[first:]

    def _read_ref(self, n0: int, count: int) -> tuple[npt.NDArray[np.int16], bool]:
        """Reference samples ``n0 .. n0 + count`` (zeros where not available) and whether
        all were available."""
        out = np.zeros(count, np.int16)
        with self._ref_lock:
            size = len(self._ref)
            lo, hi = max(n0, self._ref_end - size, 0), min(n0 + count, self._ref_end)
            if hi > lo:
                out[lo - n0 : hi - n0] = self._ref[np.arange(lo, hi) % size]
            complete = lo == n0 and hi == n0 + count
        return out, complete

    # -- delay estimation ----------------------------------------------------------------------
    def _estimate(self) -> None:
        """Cross-correlate the last second of microphone with the reference; move ``D`` if
        two estimates in a row agree on a different alignment."""
        assert self._mic_end is not None and self._mic_first is not None
        assert self._offset is not None
        o = self.options
        n_mic = len(self._mic)
        if self._mic_end - self._mic_first < n_mic:
            return
        m_start = self._mic_end - n_mic
        mic = self._mic[np.arange(m_start, self._mic_end) % n_mic]
        # Where the echo source may lie: up to max_delay_ms before the mic samples (in the
        # current pairing), up to 100 ms after them.
        back = SAMPLE_RATE * o.max_delay_ms // 1000
        r0 = m_start + self._offset - back
        ref, _ = self._read_ref(r0, n_mic + back + SAMPLE_RATE // 10)
        d = self._DECIMATE
        kernel = np.ones(d) / d
        md = np.convolve(mic.astype(np.float64), kernel, "same")[::d]
        rd = np.convolve(ref.astype(np.float64), kernel, "same")[::d]
        md -= md.mean()
        if float(np.dot(rd, rd)) < len(rd) * 30.0**2 or float(np.dot(md, md)) < len(md) * 10.0**2:
            return  # the speakers (or the mic) are silent: nothing to learn
        size = 1 << int(np.ceil(np.log2(len(rd) + len(md))))
        xc = np.fft.irfft(np.fft.rfft(rd, size) * np.conj(np.fft.rfft(md, size)), size)
        lags = len(rd) - len(md) + 1
        xc = xc[:lags]
        energy = np.cumsum(np.r_[0.0, rd**2])
        win = energy[len(md) :][:lags] - energy[:lags]
        norm = np.abs(xc) / np.sqrt(np.maximum(win, 1e-9) * float(np.dot(md, md)))
        k = int(np.argmax(norm))
        if norm[k] < 0.25:
            return  # no clear echo (near-end talk, noise)
        d_echo = r0 + k * d - m_start  # the echo of reference sample p + d_echo is at p
        self.echo_delay_ms = round((self._offset - d_echo) * 1000 / SAMPLE_RATE, 1)
        with self._ref_lock:
            available = self._ref_end - self._mic_end  # largest D with the reference here
        # Lead the echo by the margin, but not past what the speakers have handed over
        # (one block of slack for callback order); never lag the echo.
        desired = max(d_echo, min(d_echo + SAMPLE_RATE * o.margin_ms // 1000,
                                  available - FRAME_SAMPLES))
        tolerance = SAMPLE_RATE * o.margin_ms // 1000
        if self._offset - tolerance // 2 <= desired <= self._offset + tolerance:
            self._candidate = None
            return
        if self._candidate is not None and abs(self._candidate - desired) <= 2 * d:
            logger.info("echo canceller: reference realigned by %+.1f ms (correlation %.2f)",
                        (desired - self._offset) * 1000 / SAMPLE_RATE, norm[k])
            self._offset = desired
            self.realignments += 1
            self._candidate = None
        else:
            self._candidate = desired

    # -- processing ----------------------------------------------------------------------------
    def process(self, mic: npt.NDArray[np.int16], position: int | None = None
                ) -> npt.NDArray[np.int16]:
        """Clean one 960-sample microphone frame (48 kHz mono ``int16``); ``position`` is
        the number of its first sample in the microphone stream (its ``pts``; ``None``:
        right after the previous frame)."""
        mic = np.asarray(mic, dtype=np.int16).reshape(-1)
        if len(mic) != FRAME_SAMPLES:
            raise ValueError(f"microphone frames must be {FRAME_SAMPLES} samples, "
                             f"got {len(mic)}")
        self.frames += 1
        if not self.enabled:
            return mic
        pos = self._mic_next if position is None else position
        self._mic_next = pos + FRAME_SAMPLES
        gap = pos - self._mic_end if self._mic_end is not None else 0
        if self._echo is not None and 0 < gap <= self._MAX_FILL and gap % FRAME_SAMPLES == 0:
            # Lost microphone blocks: run silence with the reference played meanwhile
            # through the canceller, so its learned echo path stays in step.
            for fill in range(pos - gap, pos, FRAME_SAMPLES):
                self._process(np.zeros(FRAME_SAMPLES, np.int16), fill)
                self._out_fifo = self._out_fifo[FRAME_SAMPLES:]
        return self._process(mic, pos)

    def _process(self, mic: npt.NDArray[np.int16], pos: int) -> npt.NDArray[np.int16]:
        ref: npt.NDArray[np.int16] | None = None
        if self._echo is not None:
            if self._offset is None:  # start: pair with what the speakers just played
                with self._ref_lock:
                    self._offset = self._ref_end - FRAME_SAMPLES - pos
                self._mic_first = pos
            if self._mic_end is not None and pos < self._mic_end:
                self._mic_first = pos  # the stream restarted: history no longer matches
            self._write_ring(self._mic, pos, mic)
            self._mic_end = pos + FRAME_SAMPLES
            if self.options.estimate_delay and self.frames % self._ESTIMATE_EVERY == 0:
                self._estimate()
            ref, complete = self._read_ref(pos + self._offset, FRAME_SAMPLES)
            if not complete:
                self.reference_underruns += 1
        if self._down_mic is not None:
            self._mic_fifo = np.concatenate([self._mic_fifo, self._down_mic.process(mic)])
            if ref is not None:
                assert self._down_ref is not None
                self._ref_fifo = np.concatenate([self._ref_fifo, self._down_ref.process(ref)])
        else:
            self._mic_fifo = np.concatenate([self._mic_fifo, mic])
            if ref is not None:
                self._ref_fifo = np.concatenate([self._ref_fifo, ref])
        n = self._frame
        while len(self._mic_fifo) >= n:
            m, self._mic_fifo = self._mic_fifo[:n], self._mic_fifo[n:]
            if self._echo is not None:
                if len(self._ref_fifo) < n:
                    self._ref_fifo = np.concatenate(
                        [self._ref_fifo, np.zeros(n - len(self._ref_fifo), np.int16)])
                r, self._ref_fifo = self._ref_fifo[:n], self._ref_fifo[n:]
                m = self._echo.cancel(m, r)
            assert self._pre is not None
            m = self._pre.run(m)
            up = self._up.process(m) if self._up is not None else m
            self._out_fifo = np.concatenate([self._out_fifo, up])
        if len(self._out_fifo) < FRAME_SAMPLES:
            # Only while the resamplers prime: the shortfall becomes a fixed delay, so the
            # output stays one frame in, one frame out.
            self._out_fifo = np.concatenate(
                [np.zeros(FRAME_SAMPLES - len(self._out_fifo), np.int16), self._out_fifo])
        out, self._out_fifo = self._out_fifo[:FRAME_SAMPLES], self._out_fifo[FRAME_SAMPLES:]
        return out

    def stats(self) -> dict[str, float | int | bool | None]:
        """Counters for the status page."""
        o = self.options
        return {"aec": o.aec, "noise_suppression": o.noise_suppression, "agc": o.agc,
                "frames": self.frames, "reference_underruns": self.reference_underruns,
                "realignments": self.realignments, "echo_delay_ms": self.echo_delay_ms}

    def close(self) -> None:
        """Free the SpeexDSP states; idempotent."""
        for part in (self._echo, self._pre, self._down_mic, self._down_ref, self._up):
            if part is not None:
                part.close()
        self._pre = None
        self._echo = None
