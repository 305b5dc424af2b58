"""Echo cancellation, noise suppression and AGC (edge_agent.audio_processing, SpeexDSP)
in a simulated classroom: real espeak-ng speech, a loudspeaker → room → microphone path
with delay, attenuation and reverberation, near-end speech and noise at the mic.

Software only: no sound card is involved (the speaker sink's hand-over of played samples
is tested in test_speakers.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.audio_processing import (
    FRAME_SAMPLES,
    AudioProcessor,
    AudioProcessorOptions,
    SpeexResampler,
)
from tests.aec_room import (
    FAR_TEXT,
    NEAR_TEXT,
    RATE,
    Room,
    Signal,
    best_lag_correlation,
    energy_db,
    fit,
    speech,
    to_i16,
)

DURATION_S = 40
FAR_ONLY = (8, 18)
"""Far end only, after 8 s of convergence: ERLE is measured here."""
NEAR_ONLY = (18, 28)
DOUBLE_TALK = (30, 40)


@pytest.fixture(scope="module")
def scene() -> dict[str, Signal]:
    """0-18 s teacher far away talks (played by our speakers); 18-28 s only the local
    student talks; 30-40 s both talk."""
    far = fit(speech(FAR_TEXT, "en-us"), DURATION_S) * 0.5
    far[18 * RATE : 28 * RATE] = 0
    near = np.zeros(DURATION_S * RATE)
    clip = fit(speech(NEAR_TEXT, "zh"), 10) * 0.3
    near[18 * RATE : 28 * RATE] = clip
    near[30 * RATE : 40 * RATE] = clip
    noise = np.random.default_rng(1).standard_normal(DURATION_S * RATE) * 10 ** (-65 / 20)
    return {"far": far, "near": near, "noise": noise}


def run(processor: AudioProcessor, far: Signal, mic: Signal, lead_frames: int = 0,
        drop_every: int = 0) -> Signal:
    """Feed ``far`` as the speaker reference ``lead_frames`` 20 ms frames ahead of the mic
    (as a speaker buffer would; negative: the reference arrives late) and process ``mic``
    frame by frame with its position; ``drop_every``: every n-th mic frame is lost (the
    output there stays silent)."""
    far_i, mic_i = to_i16(far), to_i16(mic)
    out = np.zeros(len(mic_i), np.int16)
    for k in range(max(0, lead_frames)):
        processor.feed_reference(far_i[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES])
    for n, i in enumerate(range(0, len(mic_i), FRAME_SAMPLES)):
        j = i + lead_frames * FRAME_SAMPLES
        if 0 <= j < len(far_i):
            processor.feed_reference(far_i[j : j + FRAME_SAMPLES])
        if drop_every and n % drop_every == drop_every - 1:
            continue
        out[i : i + FRAME_SAMPLES] = processor.process(mic_i[i : i + FRAME_SAMPLES], i)
    processor.close()
    return out.astype(np.float64) / 32768


def window(x: Signal, span: tuple[float, float]) -> Signal:
    return x[int(span[0] * RATE) : int(span[1] * RATE)]


NO_AGC = AudioProcessorOptions(agc=False)


@pytest.mark.parametrize("room", [Room(), Room(delay_ms=120, rt60_ms=250, gain=0.8)],
                         ids=["40ms-rt300", "120ms-rt250-loud"])
def test_echo_cancelled_and_near_end_speech_kept(scene: dict[str, Signal], room: Room
                                                  ) -> None:
    echo = room.echo(scene["far"])
    mic = echo + scene["near"] + scene["noise"]
    out = run(AudioProcessor(NO_AGC), scene["far"], mic, lead_frames=1)

    erle = energy_db(window(mic, FAR_ONLY)) - energy_db(window(out, FAR_ONLY))
    assert erle >= 20.0, f"ERLE {erle:.1f} dB"

    near_in, near_out = window(scene["near"], NEAR_ONLY), window(out, NEAR_ONLY)
    lag, corr = best_lag_correlation(near_out, near_in)
    assert corr >= 0.9, f"near-end speech correlation {corr:.3f}"
    assert abs(energy_db(near_out) - energy_db(near_in)) < 3.0
    assert lag < 0.05 * RATE  # the processing adds < 50 ms

    near_dt, out_dt, mic_dt = (window(x, DOUBLE_TALK) for x in (scene["near"], out, mic))
    _, corr_out = best_lag_correlation(out_dt, near_dt)
    _, corr_mic = best_lag_correlation(mic_dt, near_dt)
    assert corr_out >= 0.9 and corr_out > corr_mic + 0.2, (corr_out, corr_mic)


def test_without_aec_the_echo_stays(scene: dict[str, Signal]) -> None:
    """The measurement can fail: with the canceller off the echo passes (noise
    suppression alone removes little of it)."""
    mic = Room().echo(scene["far"]) + scene["noise"]
    out = run(AudioProcessor(AudioProcessorOptions(aec=False, agc=False)), scene["far"], mic)
    erle = energy_db(window(mic, FAR_ONLY)) - energy_db(window(out, FAR_ONLY))
    assert erle < 6.0, f"ERLE {erle:.1f} dB without AEC"


@pytest.mark.parametrize("estimate", [True, False], ids=["estimator", "no-estimator"])
def test_delay_estimator_aligns_a_reference_handed_out_early(
    scene: dict[str, Signal], estimate: bool
) -> None:
    """A sound card with a deep output buffer: the speakers take what they play 300 ms
    before it sounds, so the echo lags the reference by 340 ms: longer than the
    canceller's 300 ms filter. Without the estimator nothing is cancelled; with it, the
    reference is realigned to lead its echo by 10 ms."""
    mic = Room().echo(scene["far"]) + scene["noise"]
    processor = AudioProcessor(AudioProcessorOptions(agc=False, estimate_delay=estimate))
    out = run(processor, scene["far"], mic, lead_frames=15)
    erle = energy_db(window(mic, FAR_ONLY)) - energy_db(window(out, FAR_ONLY))
    if estimate:
        assert erle >= 20.0, f"ERLE {erle:.1f} dB, {processor.stats()}"
        assert processor.realignments >= 1
        assert processor.echo_delay_ms is not None
    else:
        assert erle < 6.0, f"ERLE {erle:.1f} dB without the estimator"


def test_dropped_mic_frames_keep_the_alignment(scene: dict[str, Signal]) -> None:
    """Lost microphone blocks leave gaps in ``position``; pairing by position keeps the
    reference aligned (pairing in order would drift by a frame at each loss)."""
    mic = Room().echo(scene["far"]) + scene["noise"]
    out = run(AudioProcessor(NO_AGC), scene["far"], mic, lead_frames=1, drop_every=40)
    kept = np.ones(len(mic), bool)
    for n in range(39, len(mic) // FRAME_SAMPLES, 40):
        kept[n * FRAME_SAMPLES : (n + 1) * FRAME_SAMPLES] = False
    span = slice(FAR_ONLY[0] * RATE, FAR_ONLY[1] * RATE)
    erle = energy_db(mic[span][kept[span]]) - energy_db(out[span][kept[span]])
    assert erle >= 20.0, f"ERLE {erle:.1f} dB"


def test_missing_reference_is_silence_and_counted(scene: dict[str, Signal]) -> None:
    processor = AudioProcessor(NO_AGC)
    mic = to_i16(scene["near"][18 * RATE : 19 * RATE])
    for i in range(0, len(mic), FRAME_SAMPLES):
        processor.process(mic[i : i + FRAME_SAMPLES])
    assert processor.reference_underruns == RATE // FRAME_SAMPLES
    processor.close()


def test_noise_suppression_attenuates_steady_noise() -> None:
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(10 * RATE) * 10 ** (-35 / 20)
    out = run(AudioProcessor(AudioProcessorOptions(aec=False, agc=False)),
              np.zeros_like(noise), noise)
    reduction = energy_db(noise[5 * RATE :]) - energy_db(out[5 * RATE :])
    assert reduction >= 10.0, f"noise reduced by {reduction:.1f} dB"


def test_agc_raises_quiet_speech(scene: dict[str, Signal]) -> None:
    quiet = fit(speech(NEAR_TEXT, "zh"), 12) * 0.02  # a student far from the mic
    out = run(AudioProcessor(AudioProcessorOptions(aec=False, noise_suppression=False)),
              np.zeros_like(quiet), quiet)
    gain = energy_db(out[6 * RATE :]) - energy_db(quiet[6 * RATE :])
    assert gain >= 6.0, f"AGC gain {gain:.1f} dB"


def test_all_off_passes_frames_through() -> None:
    processor = AudioProcessor(AudioProcessorOptions(aec=False, noise_suppression=False,
                                                     agc=False))
    frame = (np.arange(FRAME_SAMPLES) % 200 - 100).astype(np.int16)
    assert np.array_equal(processor.process(frame), frame)
    processor.close()


def test_bad_frames_rejected() -> None:
    processor = AudioProcessor()
    with pytest.raises(ValueError, match="960 samples"):
        processor.process(np.zeros(480, np.int16))
    processor.close()
    with pytest.raises(ValueError, match="must divide"):
        AudioProcessor(AudioProcessorOptions(rate_hz=44100))


def test_resampler_keeps_a_tone() -> None:
    t = np.arange(RATE) / RATE
    tone = to_i16(0.5 * np.sin(2 * np.pi * 1000 * t))
    down = SpeexResampler(RATE, 16000)
    out = np.concatenate([down.process(tone[i : i + 960]) for i in range(0, RATE, 960)])
    down.close()
    assert abs(len(out) - 16000) <= 16
    spectrum = np.abs(np.fft.rfft(out[4000:] * np.hanning(len(out) - 4000)))
    peak_hz = np.argmax(spectrum) * 16000 / (len(out) - 4000)
    assert abs(peak_hz - 1000) < 5
