"""Glass-to-glass latency of a local lesson, with variants measured side by side.

Runs the sample county (mixer + main + N receiving agents, all real processes on
loopback) for a few short lessons per variant, alternating variants so that machine
noise hits them alike, and writes medians to JSON.

    .venv/bin/python -m benchmarks.latency --duration 20 --rounds 2 \
        --variant stock:SYNCCLASS_JITTER_BUFFER=stock --variant marker: \
        --out benchmarks/results/latency.json

A variant is ``name:ENV=VALUE,ENV=VALUE`` (environment given to every process).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from syncclass.config import default_config_path
from syncclass.demo import LocalDeployment
from syncclass.stats import median

from .harness import write_result


def one_lesson(config: Path, work: Path, duration_s: float, env: dict[str, str]) -> dict[str, Any]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with LocalDeployment(config, work) as dep:
            pairing = dep.config.pairings[0]
            members = [pairing.main, *pairing.receiving]
            dep.start_mixer()
            for cid in members:
                dep.start_agent(cid, out_dir=work / "classrooms")
            dep.wait_for(lambda: set(members) <= set(dep.mixer_status()["classrooms"]), 30,
                         "agents connected")
            status, _ = dep.agent_command(pairing.main, "start")
            assert status == 200
            # Let joins and keyframes settle, then measure a clean window.
            time.sleep(5)
            cpu0 = {n: p.cpu_s() for n, p in dep.procs.items()}
            t0 = time.monotonic()
            before = {c: dep.agent_status(c)["reception"] for c in members}
            time.sleep(duration_s)
            after = {c: dep.agent_status(c)["reception"] for c in members}
            elapsed = time.monotonic() - t0
            cpu = {n: 100 * (p.cpu_s() - cpu0[n]) / elapsed for n, p in dep.procs.items()}
            dep.agent_command(pairing.main, "end")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    fps = [
        (after[c]["frames_received"] - before[c]["frames_received"]) / elapsed for c in members
    ]
    p50 = [
        lat["p50_ms"]
        for c in members
        for lat in after[c]["latency_ms"].values()
        if "p50_ms" in lat
    ]
    p95 = [
        lat["p95_ms"]
        for c in members
        for lat in after[c]["latency_ms"].values()
        if "p95_ms" in lat
    ]
    return {
        "fps_min": round(min(fps), 2),
        "latency_p50_ms_median": median(p50),
        "latency_p95_ms_median": median(p95),
        "cpu_percent": {k: round(v, 1) for k, v in cpu.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=default_config_path())
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[],
                        help="name:ENV=VALUE,... (default: one variant, 'current')")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency.json"))
    args = parser.parse_args()
    variants: dict[str, dict[str, str]] = {}
    for spec in args.variant or ["current:"]:
        name, _, envs = spec.partition(":")
        variants[name] = dict(e.split("=", 1) for e in envs.split(",") if e)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    work = Path("/tmp/syncclass-bench-latency")
    for r in range(args.rounds):
        for name, env in variants.items():
            result = one_lesson(args.config, work / f"{name}-{r}", args.duration, env)
            print(f"round {r} {name}: {result}", flush=True)
            runs[name].append(result)
    summary = {
        name: {
            "runs": rs,
            "fps_min_median": median(x["fps_min"] for x in rs),
            "latency_p50_ms_median": median(x["latency_p50_ms_median"] for x in rs),
            "latency_p95_ms_median": median(x["latency_p95_ms_median"] for x in rs),
            "mixer_cpu_percent_median": median(x["cpu_percent"]["mixer"] for x in rs),
        }
        for name, rs in runs.items()
    }
    result = {"benchmark": "latency", "duration_s": args.duration, "rounds": args.rounds,
              "machine_cores": os.cpu_count(), "variants": summary}
    write_result(args.out, result)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "runs"}
                      for k, v in summary.items()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
