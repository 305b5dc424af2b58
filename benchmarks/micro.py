"""Per-frame costs of small hot helpers (moved out of the tests: speed is measured here,
never asserted in tests). Writes benchmarks/results/micro.json.

    .venv/bin/python -m benchmarks.micro --rounds 5

- ``read_timecode`` on a 1/4-size 720p tile (the agents read one per received frame per
  source classroom); budget 0.2 ms.
- ``SyntheticVideoSource.produce`` at 1280x720 (each synthetic camera frame); budget 3 ms.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge_agent.sources import SyntheticVideoSource
from syncclass.stats import median
from syncclass.timecode import Timecode, paint_timecode, read_timecode

from .harness import ROOT, write_result


def per_call_ms(fn: Callable[[int], object], n: int) -> float:
    fn(0)
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "micro.json")
    args = ap.parse_args()

    rng = np.random.default_rng(1)
    y = rng.integers(40, 200, (720, 1280), dtype=np.uint8)
    paint_timecode(y, Timecode(capture_ms=1_700_000_000_000, source=1))
    scaled = cv2.resize(y, (320, 180), interpolation=cv2.INTER_AREA)
    tile = np.ascontiguousarray(scaled[1:179, 2:318])
    src = SyntheticVideoSource(1280, 720, 15.0, label="cost", source=1)
    now = time.time()
    cases: dict[str, tuple[Callable[[int], object], int, float]] = {
        "read_timecode_tile_ms": (lambda i: read_timecode(tile), 500, 0.2),
        "synthetic_720p_frame_ms": (lambda i: src.produce(now + i / 15), 30, 3.0),
    }
    results: dict[str, dict[str, float | bool | list[float]]] = {}
    for name, (fn, n, budget) in cases.items():
        runs = [per_call_ms(fn, n) for _ in range(args.rounds)]
        med = median(runs)
        results[name] = {"median": round(med, 4), "runs": [round(r, 4) for r in runs],
                         "budget": budget, "within_budget": med < budget}
        print(f"{name}: median {med:.4f} ms (budget {budget} ms)")
    out = {"benchmark": "micro", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "results": results}
    write_result(args.out, out)


if __name__ == "__main__":
    main()
