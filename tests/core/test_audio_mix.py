"""N-1 audio mixing and the level/spectrum helpers, checked with known tones."""

from __future__ import annotations

import numpy as np
import pytest

from syncclass.audio import (
    SILENCE_DBOV,
    band_level_db,
    level_dbov,
    limit_to_int16,
    mix_n_minus_1,
    spectrum_peaks,
)

RATE = 48000
BLOCK = 4800  # 100 ms: 10 Hz bins, plenty to separate 440/660/1000 Hz
TONES = {"a": 440.0, "b": 660.0, "c": 1000.0}


def tone(freq_hz: float, amplitude: float = 0.25, n: int = BLOCK) -> np.ndarray:
    t = np.arange(n) / RATE
    return np.rint(amplitude * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def test_n_minus_1_three_tones() -> None:
    inputs: dict[str, np.ndarray | None] = {k: tone(f) for k, f in TONES.items()}
    full, mixes = mix_n_minus_1(inputs, ["a", "b", "c", "teacher-without-mic"])
    assert full.dtype == np.int16 and full.shape == (BLOCK,)
    for freq in TONES.values():
        assert band_level_db(full, RATE, freq) > -15
    for listener, own in TONES.items():
        mix = mixes[listener]
        assert mix.dtype == np.int16
        assert band_level_db(mix, RATE, own) < -60, listener
        for other, freq in TONES.items():
            if other != listener:
                assert band_level_db(mix, RATE, freq) > -15, (listener, other)
        peaks = [f for f, _ in spectrum_peaks(mix, RATE, count=2)]
        assert sorted(round(f) for f in peaks) == sorted(
            round(f) for k, f in TONES.items() if k != listener
        )
    # A listener without an input hears everyone.
    assert np.array_equal(mixes["teacher-without-mic"], full)


def test_mix_matches_direct_sum() -> None:
    rng = np.random.default_rng(1)
    inputs: dict[str, np.ndarray | None] = {
        k: rng.integers(-3000, 3000, BLOCK).astype(np.int16) for k in "abcd"
    }
    full, mixes = mix_n_minus_1(inputs, "abcd")
    blocks = {k: v.astype(np.int32) for k, v in inputs.items() if v is not None}
    assert np.array_equal(full, sum(blocks.values()))
    for k in "abcd":
        expected = sum(v for name, v in blocks.items() if name != k)
        assert np.array_equal(mixes[k], expected)


def test_loud_inputs_do_not_wrap() -> None:
    loud = np.full(BLOCK, 30000, dtype=np.int16)
    inputs: dict[str, np.ndarray | None] = {"a": loud, "b": loud, "c": -loud}
    full, mixes = mix_n_minus_1(inputs, ["a", "b", "c"])
    assert full.min() > 0  # 30000 + 30000 - 30000, limited but positive
    assert mixes["c"].min() > 30000  # 60000 limited near full scale, not wrapped negative
    assert mixes["c"].max() <= 32767
    # The limiter is monotonic and leaves quiet samples alone.
    ramp = np.arange(-200000, 200000, 97, dtype=np.int32)
    limited = limit_to_int16(ramp)
    assert np.all(np.diff(limited.astype(np.int32)) >= 0)
    quiet = np.arange(-20000, 20000, dtype=np.int32)
    assert np.array_equal(limit_to_int16(quiet), quiet)
    # A loud tone pair keeps both tones after limiting.
    pair: dict[str, np.ndarray | None] = {"a": tone(440, 0.9), "b": tone(1000, 0.9)}
    full, _ = mix_n_minus_1(pair, [])
    assert {round(f, -1) for f, _ in spectrum_peaks(full, RATE, count=2)} == {440, 1000}


def test_none_inputs() -> None:
    a = tone(440)
    inputs: dict[str, np.ndarray | None] = {"a": a, "b": None}
    full, mixes = mix_n_minus_1(inputs, ["a", "b"])
    assert level_dbov(mixes["a"]) == SILENCE_DBOV
    assert np.array_equal(mixes["b"], a)
    assert np.array_equal(full, a)
    silent, per = mix_n_minus_1({"a": None}, ["a"], block_samples=960)
    assert silent.shape == (960,) and not silent.any() and per["a"].shape == (960,)
    with pytest.raises(ValueError, match="block length"):
        mix_n_minus_1({"a": None}, ["a"])


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="int16"):
        mix_n_minus_1({"a": np.zeros(10, dtype=np.float32)}, [])
    with pytest.raises(ValueError, match="length"):
        mix_n_minus_1({"a": np.zeros(10, np.int16), "b": np.zeros(12, np.int16)}, [])
    with pytest.raises(ValueError, match="mono"):
        mix_n_minus_1({"a": np.zeros((2, 10), np.int16)}, [])
    # aiortc's packed mono frames come as (1, n).
    full, _ = mix_n_minus_1({"a": np.ones((1, 10), np.int16)}, [])
    assert full.shape == (10,)


def test_levels_and_peaks() -> None:
    assert level_dbov(np.zeros(960, np.int16)) == SILENCE_DBOV
    assert level_dbov(np.full(960, -32768, np.int16)) == pytest.approx(0.0, abs=0.01)
    assert level_dbov(tone(1000, 1.0)) == pytest.approx(-3.01, abs=0.1)
    assert level_dbov(tone(1000, 0.1)) == pytest.approx(-23.01, abs=0.1)
    assert band_level_db(tone(1000, 1.0), RATE, 1000) == pytest.approx(0.0, abs=0.2)
    assert band_level_db(tone(1000, 0.1), RATE, 1000) == pytest.approx(-20.0, abs=0.2)
    # Even a 20 ms block (50 Hz bins) measures the tone.
    assert band_level_db(tone(1000, 0.1, 960), RATE, 1000) == pytest.approx(-20.0, abs=0.5)
    assert band_level_db(tone(1000, 0.1), RATE, 440) < -60
    peaks = spectrum_peaks(tone(1234.5, 0.5), RATE, count=3)
    assert peaks[0][0] == pytest.approx(1234.5, abs=1.0)
    assert peaks[0][1] == pytest.approx(-6.02, abs=0.3)
    assert spectrum_peaks(np.zeros(960, np.int16), RATE) == []


def test_beep_detector_finds_onsets_to_the_window() -> None:
    from syncclass.audio import BeepDetector

    rate = 48000
    t = np.arange(rate * 2) / rate
    signal = 0.3 * np.sin(2 * np.pi * 1000 * t)  # another classroom's tone, always on
    beep = (t >= 0.5037) & (t < 0.6037)
    signal[beep] = 0.3 * np.sin(2 * np.pi * 3000 * t[beep])
    pcm = (signal * 32767).astype(np.int16)
    det = BeepDetector(rate)
    onsets: list[float] = []
    for i in range(0, len(pcm), 960):
        block = pcm[i : i + 960]
        onsets += det.feed(block, end_ms=10_000 + (i + len(block)) * 1000 / rate)
    assert len(onsets) == 1
    assert abs(onsets[0] - (10_000 + 503.7)) <= 2.5  # one 2.5 ms window
