"""CPU of encoding the mixer's N-1 audio mixes: aiortc's sender path vs the mixer's own.

Every 20 ms the mixer makes one mix per listening classroom. Stock aiortc, handed an
``av.AudioFrame`` per sender, computes its audio level, then runs its ``OpusEncoder``
(upmix to stereo through a resampler, libopus) in the default executor — one thread hand-off
per listener per block. The mixer now encodes mono with one ``MixEncoder`` per listener,
all listeners in one hand-off (``mixer.media._encode_mixes``). This runs both on the same
blocks (a tone plus noise, different per listener) in one process under uvloop, ticks not
paced, rounds alternating, and reports process CPU per 20 ms tick (all threads).

    .venv/bin/python -m benchmarks.mix_audio --listeners 5,9 --ticks 500 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from aiortc import rtp
from aiortc.codecs.opus import OpusEncoder

from mixer.media import AUDIO_FRAME, MixEncoder, _audio_frame, _encode_mixes
from syncclass.rtc import PacketQueueTrack, use_fast_audio_level, use_opus_bitrate
from syncclass.stats import median

from .harness import RESULTS, environment, write_result

KBPS = 32


def blocks(listeners: int, ticks: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    t = np.arange(AUDIO_FRAME * ticks) / 48000
    out = []
    for k in range(listeners):
        sig = 6000 * np.sin(2 * np.pi * (300 + 50 * k) * t) + rng.standard_normal(t.size) * 300
        out.append(list(sig.astype(np.int16).reshape(ticks, AUDIO_FRAME)))
    return [[out[k][i] for k in range(listeners)] for i in range(ticks)]


async def aiortc_path(data: list[list[np.ndarray]]) -> int:
    loop = asyncio.get_running_loop()
    encoders = [OpusEncoder() for _ in data[0]]
    sent = 0
    for i, tick in enumerate(data):
        frames = [_audio_frame(b, i * AUDIO_FRAME) for b in tick]

        async def one(enc: OpusEncoder, frame: Any) -> int:
            rtp.compute_audio_level_dbov(frame)
            payloads, _ = await loop.run_in_executor(None, enc.encode, frame, False)
            return len(payloads)

        sent += sum(await asyncio.gather(*(one(e, f) for e, f in
                                          zip(encoders, frames, strict=True))))
    return sent


async def mixer_path(data: list[list[np.ndarray]]) -> int:
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(1, "audio-encode")
    tracks = [PacketQueueTrack("audio", maxsize=len(data) + 1) for _ in data[0]]
    encoders = [MixEncoder(KBPS) for _ in data[0]]
    sent = 0
    for i, tick in enumerate(data):
        jobs = list(zip(tracks, encoders, tick, strict=True))
        for track, packet in await loop.run_in_executor(pool, _encode_mixes, jobs,
                                                        i * AUDIO_FRAME):
            track.put(packet)
            sent += 1
    pool.shutdown()
    return sent


def measure(path: str, data: list[list[np.ndarray]]) -> dict[str, float]:
    fn = aiortc_path if path == "aiortc" else mixer_path
    c0, w0 = time.process_time(), time.perf_counter()
    sent = uvloop.run(fn(data))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"cpu_ms_per_tick": 1000 * cpu / len(data), "wall_ms_per_tick": 1000 * wall / len(data),
            "packets": sent}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listeners", default="5,9",
                    help="listening classrooms (1 + N lesson: N + 1); default 5,9")
    ap.add_argument("--ticks", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "mix_audio.json")
    args = ap.parse_args()
    use_opus_bitrate(KBPS)
    use_fast_audio_level()
    env = environment()
    results: dict[str, Any] = {}
    for n in (int(x) for x in args.listeners.split(",")):
        data = blocks(n, args.ticks)
        runs: dict[str, list[dict[str, float]]] = {"aiortc": [], "mixer": []}
        for _ in range(args.rounds):
            for path in ("aiortc", "mixer"):
                runs[path].append(measure(path, data))
        med = {p: median(r["cpu_ms_per_tick"] for r in rs) for p, rs in runs.items()}
        results[str(n)] = {
            "runs": runs,
            "median_cpu_ms_per_tick": {p: round(v, 3) for p, v in med.items()},
            "ratio_mixer_over_aiortc": round(med["mixer"] / med["aiortc"], 3),
            "percent_of_a_core_at_50_ticks_per_s": {p: round(v * 5, 2)
                                                    for p, v in med.items()},
        }
        print(f"{n} listeners: CPU per 20 ms tick aiortc {med['aiortc']:.3f} ms, mixer "
              f"{med['mixer']:.3f} ms (ratio {med['mixer'] / med['aiortc']:.2f}; "
              f"{med['aiortc'] * 5:.1f} vs {med['mixer'] * 5:.1f} % of a core)", flush=True)
    write_result(args.out, {"benchmark": "mix_audio", "environment_start": env,
                            "environment_end": environment(),
                            "args": {**vars(args), "out": str(args.out)},
                            "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
