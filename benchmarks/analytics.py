"""What analytics costs the mixer: VAD per audio block, head count per sampled frame, and
writing a 45-minute lesson's report. Thread CPU time (``time.thread_time``), so other
processes' load does not inflate the figures; medians over rounds, variants side by side
in one run.

    .venv/bin/python benchmarks/analytics.py --rounds 5 --out benchmarks/results/analytics.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixer.analytics import SiteVoice  # noqa: E402
from mixer.headcount import HeadCounter  # noqa: E402
from mixer.report import build_report, write_report  # noqa: E402
from syncclass.config import default_config_path, load_config  # noqa: E402
from tests.headcount_scenes import make_scene  # noqa: E402
from tests.mixer.test_report_files import data_for, lesson_at  # noqa: E402
from tests.speech_fixtures import espeak  # noqa: E402


def cpu_ms(fn: Any, *args: Any) -> float:
    t = time.thread_time()
    fn(*args)
    return (time.thread_time() - t) * 1000


def vad_block_us(speech: np.ndarray, rounds: int) -> dict[str, float]:
    sig = np.concatenate([speech, np.zeros(48000 * 2, np.int16)])
    sig = sig[: len(sig) // 960 * 960]
    blocks = [sig[i : i + 960] for i in range(0, len(sig), 960)]
    out = {}
    for mode in (0, 2, 3):
        per = []
        for _ in range(rounds):
            v = SiteVoice(mode, 300)

            def run(v: SiteVoice = v) -> None:
                for i, b in enumerate(blocks):
                    v.push(b, 1_000_000 + 20 * (i + 1), i * 960)

            per.append(cpu_ms(run) * 1000 / len(blocks))
        out[f"mode_{mode}"] = round(statistics.median(per), 1)
    return out


def head_count_ms(rounds: int) -> dict[str, Any]:
    scenes = [cv2.cvtColor(make_scene(k, 2000 + k)[0], cv2.COLOR_BGR2GRAY) for k in (0, 3, 8)]
    out: dict[str, Any] = {}
    for width in (640, 960, 1280):
        hc = HeadCounter(max_width=width)
        per = [cpu_ms(hc.count, s) for _ in range(rounds) for s in scenes]
        out[f"max_width_{width}"] = round(statistics.median(per), 1)
    return out


def report_ms(rounds: int) -> float:
    config = load_config(default_config_path())
    lesson = lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone(), minutes=45)
    data = data_for(lesson)
    per = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            per.append(cpu_ms(lambda i=i: write_report(build_report(config, data, 1),
                                                       Path(tmp) / str(i))))
    return round(statistics.median(per), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/analytics.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speech = espeak("同学们好，今天我们学习分数的加法。请大家看黑板上的第一道例题。",
                        Path(tmp) / "t.wav", 40)
    result = {
        "measured": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu": "thread CPU time, median over rounds",
        "rounds": args.rounds,
        "vad_us_per_20ms_block": vad_block_us(speech, args.rounds),
        "head_count_ms_per_1280x720_frame": head_count_ms(args.rounds),
        "report_45min_build_and_write_ms": report_ms(args.rounds),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
