"""Cost of the analytics checkpoint a node writes to Redis for fail-over (issue 20): size
and time on the event loop of a 1 + 8 lesson's checkpoint after 10 and 45 minutes. Writes
benchmarks/results/checkpoint.json.

    .venv/bin/python -m benchmarks.checkpoint --rounds 5

The lesson's analytics are synthetic but shaped as the mixer keeps them: a network sample
every ``network_interval_s`` (2 s) per classroom, a head count every 10 s, speech segments
(the main classroom speaks in ~4 s stretches with 1 s pauses, each receiving classroom
once a minute), a hand raise every 5 minutes per receiving classroom, a directing switch
every 15 s, two attendance sessions per classroom. Measured: building the document
(:meth:`mixer.analytics.LessonAnalytics.checkpoint` + ``to_json``, on the event loop every
``checkpoint_s``), its bytes, the network samples thinned to fit
:data:`~syncclass.analytics.checkpoint.MAX_CHECKPOINT_BYTES`, and parsing it (once, by the
survivor).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mixer.analytics import LessonAnalytics, SiteVoice
from syncclass.analytics.checkpoint import MAX_CHECKPOINT_BYTES, AnalyticsCheckpoint
from syncclass.lesson import Lesson
from syncclass.stats import median

from .harness import ROOT, write_result

T0 = 1_764_900_000_000
RECEIVING = [f"r{i}" for i in range(8)]


def lesson_state(minutes: float) -> LessonAnalytics:
    """A live 1 + 8 lesson's analytics after ``minutes``."""
    end = T0 + int(minutes * 60_000)
    lesson = Lesson("math-g3-20261205-083000-1", "p", "main", list(RECEIVING), "数学", "三年级",
                    "王老师", None, "live", T0, None)
    la = LessonAnalytics(lesson)
    for cid in ["main", *RECEIVING]:
        la.attendance.join(cid, T0 + 3_000)
        la.attendance.leave(cid, T0 + 60_000, "disconnected")
        la.attendance.join(cid, T0 + 65_000)
        la.contacts[cid] = T0 - 1_000
        la.network[cid] = [{"ts_ms": t, "rtt_ms": 23.4, "jitter_ms": 4.1, "loss_percent": 0.3,
                            "bitrate_kbps": 812.5, "fps": 14.9, "freezes": 1,
                            "latency_ms": 187.2} for t in range(T0, end, 2_000)]
        la.heads[cid] = [(t, 31) for t in range(T0, end, 10_000)]
        voice = la.voices[cid] = SiteVoice(2, 300)
        step, talk = (5_000, 4_000) if cid == "main" else (60_000, 3_000)
        voice.smoother.segments.extend((t, t + talk) for t in range(T0, end - talk, step))
        if cid != "main":
            la.hands[cid] = list(range(T0 + 30_000, end, 300_000))
    la.prior_directing = [{"t_s": (t - T0) / 1000, "active": "main", "courseware": False,
                           "large": None, "reason": "speech", "source": "main", "ts_ms": t}
                          for t in range(T0, end, 15_000)]
    return la


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "checkpoint.json")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    for minutes in (10, 45):
        la = lesson_state(minutes)
        ts = T0 + minutes * 60_000
        build, parse = [], []
        text = ""
        for _ in range(args.rounds):
            t = time.perf_counter()
            text = la.checkpoint(ts, "n1").to_json()
            build.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            back = AnalyticsCheckpoint.parse(text)
            parse.append((time.perf_counter() - t) * 1000)
        samples = sum(len(v) for v in la.network.values())
        results[f"{minutes}_min"] = {
            "build_ms_median": round(median(build), 2), "build_ms": [round(x, 2) for x in build],
            "parse_ms_median": round(median(parse), 2),
            "bytes": len(text.encode()), "max_bytes": MAX_CHECKPOINT_BYTES,
            "network_samples": samples, "network_samples_thinned": back.thinned,
        }
        print(f"{minutes} min: {len(text.encode())} bytes, build {median(build):.2f} ms, "
              f"parse {median(parse):.2f} ms, network samples thinned {back.thinned} of "
              f"{samples}")
    write_result(args.out, {"benchmark": "checkpoint", "classrooms": 9, "results": results})


if __name__ == "__main__":
    main()
