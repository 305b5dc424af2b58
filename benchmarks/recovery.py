"""Does latency come back after a busy moment? (the drift part of issue 7)

One lesson of the sample county (mixer + three agents, real processes). After ``--pre``
seconds, ``--hog`` seconds of CPU hogs (one busy process per core) load the machine; then
the lesson goes on for ``--post`` seconds. Each agent reports to the mixer the median
glass-to-glass latency of its last 30 s per source; this samples that every 2 s and
compares the window just before the hog with the window ending ``--post`` seconds after
it (which no longer contains the hog). A pipeline with a standing queue (a backlog formed
while the machine was busy and never drained) stays behind by the backlog.

    .venv/bin/python -m benchmarks.recovery --pre 35 --hog 10 --post 45 \\
        --out benchmarks/results/recovery.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from syncclass.demo import LocalDeployment
from syncclass.stats import median

from ._common import API_TOKEN, api_get, start_lesson
from .harness import ROOT, environment, write_result


def _spin(until: float) -> None:
    x = 0
    while time.monotonic() < until:
        x += 1


def latency_now(dep: LocalDeployment) -> float | None:
    rooms = api_get(dep, "/api/lessons")["classrooms"]
    values = [v for r in rooms.values() for v in ((r.get("stats") or {}).get("latency_ms")
                                                  or {}).values()]
    return round(median(values), 1) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pre", type=float, default=35.0)
    ap.add_argument("--hog", type=float, default=10.0)
    ap.add_argument("--post", type=float, default=45.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recovery.json"))
    args = ap.parse_args()
    env0 = environment()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="syncclass-recovery-") as tmp_s:
        tmp = Path(tmp_s)
        data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
        data.setdefault("ops", {})["api_token"] = API_TOKEN
        data["mixer"]["data_dir"] = str(tmp / "mixer-data")
        config = tmp / "county.yaml"
        config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        with LocalDeployment(config, tmp, log_level="warning") as dep:
            pairing = dep.config.pairings[0]
            start_lesson(dep, [pairing.main, *pairing.receiving], recorder=False)
            t0 = time.monotonic()
            hog_at, hog_end = t0 + args.pre, t0 + args.pre + args.hog
            hogs: list[multiprocessing.Process] = []
            end = hog_end + args.post
            while time.monotonic() < end:
                now = time.monotonic()
                if not hogs and now >= hog_at:
                    hogs = [multiprocessing.Process(target=_spin, args=(hog_end,))
                            for _ in range(os.cpu_count() or 2)]
                    for h in hogs:
                        h.start()
                samples.append({"t_s": round(now - t0, 1), "latency_p50_ms": latency_now(dep),
                                "hog": hog_at <= now < hog_end})
                time.sleep(2.0)
            for h in hogs:
                h.join()
    pre = [s["latency_p50_ms"] for s in samples if s["t_s"] <= args.pre
           and s["latency_p50_ms"] is not None]
    post = [s["latency_p50_ms"] for s in samples
            if s["t_s"] >= args.pre + args.hog + args.post - 4 and s["latency_p50_ms"]]
    hog = [s["latency_p50_ms"] for s in samples if s["hog"] and s["latency_p50_ms"]]
    result = {"args": vars(args), "environment": {"start": env0, "end": environment()},
              "before_hog_ms": pre[-1] if pre else None,
              "max_during_or_after_ms": max((s["latency_p50_ms"] or 0) for s in samples),
              "at_end_ms": post[-1] if post else None, "hog_samples": len(hog),
              "samples": samples}
    if result["before_hog_ms"] and result["at_end_ms"]:
        result["after_minus_before_ms"] = round(result["at_end_ms"] - result["before_hog_ms"], 1)
    write_result(Path(args.out), result)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
