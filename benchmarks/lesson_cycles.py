"""Lesson start/end cycles: does the mixer give back a lesson's memory once its report is
written? (issue 18: 30 empty cycles took the mixer's RSS from 127 MB to 1.15 GB.)

A real ``syncclass mixer`` (the sample county: 1280x720 at 15 fps, analytics on) and no
agents: the main classroom's credential starts a lesson over the HTTP API, the lesson
runs ``--hold-s`` (its views compose and encode placeholders), ends, and the benchmark
waits until ``GET /api/reports/<id>`` says the report is written; then it reads the mixer's
RSS (psutil). Target: after ``--cycles`` (200) the RSS is within 10 % of the RSS after the
first 5 cycles.

    .venv/bin/python benchmarks/lesson_cycles.py --cycles 200 \
        --out benchmarks/results/lesson_cycles.json

``mixer.lesson_actions_per_min`` (start/end per classroom, 12 by default) is raised for
the run, when the code under test has it.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from syncclass.config import MixerConfig
from syncclass.demo import LocalDeployment, http_json
from syncclass.stats import median

from ._common import API_TOKEN, county_config
from .harness import RESULTS, environment, write_result

BASELINE_CYCLE = 5
"""RSS after this many cycles is the baseline (the first lessons warm caches and pools)."""


def run_cycle(dep: LocalDeployment, main: str, token: str, hold_s: float,
              timeout_s: float = 60.0) -> dict[str, Any]:
    """One lesson: start, hold, end, wait for its report. Seconds of each step."""
    t0 = time.monotonic()
    status, lesson = http_json(dep.mixer_url + "/api/lessons/start", "POST",
                               {"classroom_id": main}, token=token)
    if status != 200:
        raise RuntimeError(f"start: {status} {lesson}")
    time.sleep(hold_s)
    status, body = http_json(dep.mixer_url + "/api/lessons/end", "POST",
                             {"classroom_id": main}, token=token)
    if status != 200:
        raise RuntimeError(f"end: {status} {body}")
    t_end = time.monotonic()
    while True:
        status, report = http_json(f"{dep.mixer_url}/api/reports/{lesson['lesson_id']}",
                                   token=API_TOKEN)
        if status == 200 and report.get("ready"):
            break
        if time.monotonic() - t_end > timeout_s:
            raise RuntimeError(f"report of {lesson['lesson_id']} not ready: {status} {report}")
        time.sleep(0.05)
    return {"lesson_id": lesson["lesson_id"], "cycle_s": round(time.monotonic() - t0, 2),
            "report_s": round(time.monotonic() - t_end, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--hold-s", type=float, default=0.5,
                    help="how long each lesson is live, s")
    ap.add_argument("--work", default="/tmp/syncclass-lesson-cycles")
    ap.add_argument("--out", default=str(RESULTS / "lesson_cycles.json"))
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    config_path = county_config(work, rural=2)
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if "lesson_actions_per_min" in MixerConfig.model_fields:
        data["mixer"]["lesson_actions_per_min"] = 1_000_000
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    dep = LocalDeployment(config_path, work)
    main_room = dep.config.pairings[0].main
    token = dep.config.classroom(main_room).token
    env0 = environment()
    samples: list[dict[str, Any]] = []
    try:
        mixer = psutil.Process(dep.start_mixer().popen.pid)
        rss0 = mixer.memory_info().rss / 2**20
        for n in range(1, args.cycles + 1):
            cycle = run_cycle(dep, main_room, token, args.hold_s)
            rss = round(mixer.memory_info().rss / 2**20, 1)
            samples.append({"cycle": n, "rss_mb": rss, **cycle})
            if n == 1 or n % 10 == 0:
                print(f"cycle {n}: RSS {rss} MB, cycle {cycle['cycle_s']} s", flush=True)
    finally:
        dep.stop_all()
    base = samples[BASELINE_CYCLE - 1]["rss_mb"]
    final = samples[-1]["rss_mb"]
    result = {
        "benchmark": "lesson_cycles",
        "command": f"benchmarks/lesson_cycles.py --cycles {args.cycles} --hold-s {args.hold_s}",
        "environment": env0,
        "environment_end": environment(),
        "media": {"width": dep.config.media.width, "height": dep.config.media.height,
                  "fps": dep.config.media.fps},
        "cycles": args.cycles,
        "hold_s": args.hold_s,
        "rss_mb_at_start": round(rss0, 1),
        "rss_mb_after_baseline": base,
        "baseline_cycle": BASELINE_CYCLE,
        "rss_mb_final": final,
        "rss_mb_max": max(s["rss_mb"] for s in samples),
        "growth_percent": round(100.0 * (final - base) / base, 1),
        "target": "final RSS within 10 % of the RSS after the first 5 cycles",
        "met": final <= 1.10 * base,
        "median_cycle_s": round(median(s["cycle_s"] for s in samples), 2),
        "samples": samples,
    }
    write_result(Path(args.out), result)
    print(f"RSS {result['rss_mb_at_start']} MB at start, {base} MB after {BASELINE_CYCLE} "
          f"cycles, {final} MB after {args.cycles} ({result['growth_percent']:+.1f} %); "
          f"target met: {result['met']}")


if __name__ == "__main__":
    main()
