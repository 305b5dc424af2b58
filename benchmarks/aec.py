"""Echo cancellation of the classroom microphone (SpeexDSP via edge_agent.audio_processing):
echo return loss enhancement (ERLE), near-end speech kept, CPU per frame.

Simulated classroom: far-end speech (espeak-ng) played through rooms with delay,
attenuation and reverberation, near-end speech (another voice) and noise at the mic;
variants (AEC only, AEC + residual echo suppression + noise suppression, no AEC) run on the
same signals in one process, repeated ``--rounds`` times (medians reported).

    .venv/bin/python -m benchmarks.aec --rounds 3 --out benchmarks/results/aec.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.audio_processing import (
    FRAME_SAMPLES,
    AudioProcessor,
    AudioProcessorOptions,
)
from syncclass.stats import median
from syncclass.testing.aec_room import (
    FAR_TEXT,
    NEAR_TEXT,
    RATE,
    Room,
    best_lag_correlation,
    energy_db,
    fit,
    speech,
    to_i16,
)

from .harness import ROOT, write_result

ROOMS = {
    "small-rt300-40ms": Room(),
    "loud-rt250-120ms": Room(delay_ms=120, rt60_ms=250, gain=0.8),
    "reverberant-rt600-40ms": Room(rt60_ms=600, tail_db=0.0),
}
VARIANTS = {
    "aec_only": AudioProcessorOptions(noise_suppression=False, agc=False, echo_suppress_db=0,
                                      echo_suppress_active_db=0),
    "aec_res_ns": AudioProcessorOptions(agc=False),
    "no_aec_ns_only": AudioProcessorOptions(aec=False, agc=False),
}


def scene() -> dict[str, np.ndarray]:
    far = fit(speech(FAR_TEXT, "en-us"), 40) * 0.5
    far[18 * RATE : 28 * RATE] = 0
    near = np.zeros(40 * RATE)
    clip = fit(speech(NEAR_TEXT, "zh"), 10) * 0.3
    near[18 * RATE : 28 * RATE] = clip
    near[30 * RATE : 40 * RATE] = clip
    noise = np.random.default_rng(1).standard_normal(40 * RATE) * 10 ** (-65 / 20)
    return {"far": far, "near": near, "noise": noise}


def measure(sc: dict[str, np.ndarray], room: Room, options: AudioProcessorOptions
            ) -> dict[str, Any]:
    mic = room.echo(sc["far"]) + sc["near"] + sc["noise"]
    far_i, mic_i = to_i16(sc["far"]), to_i16(mic)
    proc = AudioProcessor(options)
    out = np.zeros(len(mic_i), np.int16)
    cpu = []
    for i in range(0, len(mic_i), FRAME_SAMPLES):
        j = i + FRAME_SAMPLES  # the speakers hand out one frame ahead of the mic
        proc.feed_reference(far_i[j : j + FRAME_SAMPLES])
        t0 = time.perf_counter()
        out[i : i + FRAME_SAMPLES] = proc.process(mic_i[i : i + FRAME_SAMPLES], i)
        cpu.append(time.perf_counter() - t0)
    stats = proc.stats()
    proc.close()
    o = out.astype(np.float64) / 32768

    def w(x: np.ndarray, a: float, b: float) -> np.ndarray:
        return x[int(a * RATE) : int(b * RATE)]

    _, corr_near = best_lag_correlation(w(o, 18.5, 28), w(sc["near"], 18.5, 28))
    _, corr_dt = best_lag_correlation(w(o, 30, 40), w(sc["near"], 30, 40))
    _, corr_dt_mic = best_lag_correlation(w(mic, 30, 40), w(sc["near"], 30, 40))
    return {
        "erle_db_8_18s": round(energy_db(w(mic, 8, 18)) - energy_db(w(o, 8, 18)), 1),
        "erle_db_2_8s": round(energy_db(w(mic, 2, 8)) - energy_db(w(o, 2, 8)), 1),
        "near_only_corr": round(corr_near, 3),
        "near_only_level_change_db": round(
            energy_db(w(o, 18.5, 28)) - energy_db(w(sc["near"], 18.5, 28)), 2),
        "double_talk_corr_out": round(corr_dt, 3),
        "double_talk_corr_mic": round(corr_dt_mic, 3),
        "cpu_ms_per_20ms_frame_median": round(median(cpu) * 1000, 3),
        "realignments": stats["realignments"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "aec.json")
    args = ap.parse_args()
    sc = scene()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for _ in range(args.rounds):
        for rname, room in ROOMS.items():
            for vname, opts in VARIANTS.items():
                runs.setdefault(rname, {}).setdefault(vname, []).append(measure(sc, room, opts))
    result: dict[str, Any] = {"rounds": args.rounds, "signal": {
        "far": "espeak-ng en-us, 0-18 s and 28-40 s", "near": "espeak-ng zh, 18-28 s and "
        "30-40 s (double talk)", "noise_dbfs": -65, "erle_window_s": [8, 18]},
        "rooms": {k: vars(v) for k, v in ROOMS.items()}, "results": {}}
    for rname, variants in runs.items():
        for vname, samples in variants.items():
            keys = samples[0].keys()
            result["results"].setdefault(rname, {})[vname] = {
                k: median(s[k] for s in samples) for k in keys}
    write_result(args.out, result)
    print(json.dumps(result["results"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
