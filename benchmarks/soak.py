"""Soak: one long lesson with 1 main + N receiving classrooms (real processes); samples the
mixer's memory (RSS), open descriptors and threads, and the classrooms' latency, then
writes JSON (benchmarks/results/soak.json).

    .venv/bin/python -m benchmarks.soak --minutes 45 --rural 8

Targets (issue 8): RSS growth < 5 % from minute 2 to the end, no descriptor, thread or
task growth, latency stable. Issue 7's drift target: the median latency over the last
5 minutes within 10 ms of minutes 1-6 (``latency_drift_ms``). A recorder runs too
(``--no-recorder`` to leave it out); receiving classrooms after the first send 320x180
cameras (``--light``) so that 1 + 8 agents fit on a 2-core machine with the mixer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

from syncclass.demo import LocalDeployment
from syncclass.stats import median

from ._common import api_get, county_config, load_classroom_argv
from .harness import ROOT, environment, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--rural", type=int, default=8)
    ap.add_argument("--light", default="320x180",
                    help="camera size of receiving classrooms after the first ('' = all "
                         "1280x720); a 2-core machine cannot host 9 full agents")
    ap.add_argument("--prerecorded", action="store_true",
                    help="receiving classrooms after the first run load_classroom.py (their "
                         "1280x720 camera encoded once and replayed: real 720p inputs for the "
                         "mixer at about half an agent's CPU); use with --light ''")
    ap.add_argument("--no-recorder", action="store_true")
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--work", default="/tmp/syncclass-soak")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak.json"))
    args = ap.parse_args()
    work = Path(args.work)
    # A fresh county: an interrupted soak leaves its lesson live in the mixer's state,
    # which the next mixer would restore (and refuse to start another lesson).
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    light = tuple(int(x) for x in args.light.split("x")) if args.light else None
    config = county_config(work, args.rural, light_size=light)  # type: ignore[arg-type]
    dep = LocalDeployment(config, work)
    samples: list[dict[str, Any]] = []
    env0 = environment()
    try:
        mixer = psutil.Process(dep.start_mixer().popen.pid)
        if not args.no_recorder:
            dep.start_recorder()
        members = [dep.config.pairings[0].main, *dep.config.pairings[0].receiving]
        replayed = set(members[2:]) if args.prerecorded else set()
        for cid in members:
            dep.start_agent(cid, wrap=load_classroom_argv if cid in replayed else None)
        dep.wait_for(lambda: set(members) <= set(dep.mixer_status()["classrooms"]), 90,
                     "classrooms connected")
        status, lesson = dep.agent_command(members[0], "start")
        assert status == 200, lesson
        t0 = time.monotonic()
        cpu0 = mixer.cpu_times()
        threads0: dict[str, float] = {}
        t_prev = t0
        while time.monotonic() - t0 < args.minutes * 60:
            time.sleep(args.sample_s)
            rooms = dep.mixer_status()["classrooms"]
            # Each agent reports the median of its last 30 s of samples per source.
            latency = [v for r in rooms.values() for v in (r["stats"].get("latency_ms") or {})
                       .values()]
            proc = api_get(dep, "/api/stats").get("process", {})
            cpu1 = mixer.cpu_times()
            now = time.monotonic()
            # Per kind of thread (event loop, compose, encode, decoders…): which one grows
            # when the mixer's CPU does.
            threads1: dict[str, float] = proc.get("thread_cpu_s") or {}
            threads_cpu = {name: round(100 * (sec - threads0.get(name, 0.0)) / (now - t_prev),
                                       1) for name, sec in threads1.items()} if threads0 else {}
            threads0, t_prev = threads1, now
            samples.append({"t_s": round(time.monotonic() - t0, 1),
                            "rss_mb": round(mixer.memory_info().rss / 2**20, 1),
                            "fds": mixer.num_fds(), "threads": mixer.num_threads(),
                            "tasks": proc.get("tasks"),
                            "mixer_cpu_percent": round(100 * (
                                cpu1.user + cpu1.system - cpu0.user - cpu0.system)
                                / args.sample_s, 1),
                            "mixer_threads_cpu_percent": threads_cpu,
                            "connected": sum(r["peer"] == "connected" for r in rooms.values()),
                            "latency_p50_ms": round(median(latency), 1)
                            if latency else None})
            cpu0 = cpu1
            print(json.dumps(samples[-1]), flush=True)
        dep.agent_command(members[0], "end")
    finally:
        dep.stop_all()
    warm = [s for s in samples if s["t_s"] >= 120] or samples
    first, last = warm[0], warm[-1]

    def median_latency(rows: list[dict[str, Any]]) -> float | None:
        vals = [r["latency_p50_ms"] for r in rows if r["latency_p50_ms"] is not None]
        return round(median(vals), 1) if vals else None

    end = samples[-1]["t_s"] if samples else 0.0
    first5 = median_latency([s for s in samples if 60 <= s["t_s"] <= 360])
    last5 = median_latency([s for s in samples if s["t_s"] >= end - 300])
    result = {"minutes": args.minutes, "rural": args.rural, "light": args.light,
              "prerecorded": args.prerecorded,
              "recorder": not args.no_recorder, "samples": len(samples),
              "rss_mb_first_last": [first["rss_mb"], last["rss_mb"]],
              "rss_growth_percent": round(100 * (last["rss_mb"] - first["rss_mb"])
                                          / first["rss_mb"], 2),
              "fds": [first["fds"], last["fds"]], "threads": [first["threads"],
                                                              last["threads"]],
              "tasks": [first["tasks"], last["tasks"]],
              "latency_p50_ms_minutes_1_6": first5, "latency_p50_ms_last_5_minutes": last5,
              "latency_drift_ms": None if first5 is None or last5 is None
              else round(last5 - first5, 1),
              "min_connected": min((s["connected"] for s in samples), default=0),
              "environment_start": env0, "environment_end": environment(),
              "series": samples}
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items()
                      if k not in ("series", "environment_start", "environment_end")}))


if __name__ == "__main__":
    main()
