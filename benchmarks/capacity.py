"""Capacity: 1 main + N receiving classrooms, both views composed and encoded, recording on.

For each N in ``--rural`` (and each setup in ``--setups``) this runs one real lesson on
loopback: the mixer, a ``syncclass recorder`` subscribed to it, and one agent process per
classroom (synthetic 1280x720 camera at the county's 15 fps + tone). After ``--settle``
seconds it measures a window of ``--seconds``:

- the mixer's composite frames per view (``/api/stats``): composed vs expected
  (fps x window) and skipped (the compose loop fell behind and dropped ticks);
- CPU % of one core of the mixer, the recorder and every agent (``psutil``), and the
  mixer's split by kind of thread (event loop ``MainThread``, ``compose``, ``encode``,
  decoders, ``native`` libav/x264 workers; ``/api/stats``);
- frames per second the mixer received from each classroom and each agent received;
- glass-to-glass latency (timecode burned in at capture, read by the receiving agents):
  median over (receiver, source) pairs of each pair's p50 and p95.

Then: marginal mixer CPU per added receiving classroom (least-squares slope of mixer CPU
over N) and the largest N at which no composite frame was skipped and both views kept
>= 95 % of the nominal frame rate.

Setups: ``faithful`` = every classroom sends 1280x720; ``light`` = the main and the first
``--light-keep`` receiving classrooms send 1280x720, the others a 320x180 synthetic camera
(``--light-size``). On a small machine the agents (~1/3 of a core each at 720p) are the
bottleneck, not the mixer; ``light`` leaves the mixer more CPU, at the price of smaller
input pictures for the mixer to decode and scale (so its per-classroom cost is lower than
with real 720p cameras). ``prerecorded`` = every classroom sends 1280x720, but the
receiving classrooms after the first ``--light-keep`` are ``load_classroom.py`` agents whose
camera's H.264 was encoded once at start-up and is replayed: the mixer's load is that of
real 720p cameras while those agents spend no camera or encoder CPU (they still receive
their view without decoding it, and run audio; they report no latency). Setups alternate
per N so machine noise hits them alike.

    .venv/bin/python -m benchmarks.capacity --rural 1,2,4,8 --seconds 30 \\
        --setups faithful,light --out benchmarks/results/capacity.json
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from syncclass.demo import LocalDeployment

from ._common import api_get, county_config, measure_window, start_lesson
from .harness import RESULTS, environment, write_result

SETUPS = ("faithful", "light", "prerecorded")

FRAME_RATE_OK = 0.95
"""A view "keeps up" if it composed at least this fraction of its nominal frames."""


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` over ``xs`` (None with fewer than two distinct xs)."""
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)


def parse_size(text: str) -> tuple[int, int]:
    """``"320x180"`` → (320, 180); raises ValueError otherwise."""
    w, sep, h = text.partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ValueError(f"size must look like 320x180, got {text!r}")
    return int(w), int(h)


def adaptation_summary(adaptation: dict[str, Any]) -> str:
    """One line: agents whose uplink encoder changed, and each view's low rendition."""
    changed = {c: (u["changes"], u["target_kbps"])
               for c, u in adaptation["uplinks"].items() if u and u["changes"]}
    views = {name: v and (v["low_encoders_created"], len(v["on_low"]))
             for name, v in adaptation["views"].items()}
    return (f"uplinks changed {changed or 'none'} "
            f"(changes, target kbit/s); views (low encoders created, on low) {views}")


def one_run(rural: int, setup: str, args: argparse.Namespace, work: Path,
            estimator: str | None = None) -> dict[str, Any]:
    light = parse_size(args.light_size) if setup == "light" else None
    adaptation = None if args.adaptation == "default" else args.adaptation == "on"
    config = county_config(work, rural, light_size=light, light_keep=args.light_keep,
                           adaptation=adaptation, estimator=estimator)
    with LocalDeployment(config, work, log_level="warning") as dep:
        pairing = dep.config.pairings[0]
        members = [pairing.main, *pairing.receiving]
        prerecorded = (frozenset(pairing.receiving[args.light_keep:])
                       | ({pairing.main} if args.prerecord_main else set())
                       if setup == "prerecorded" else frozenset())
        t0 = time.monotonic()
        lesson = start_lesson(dep, members, recorder=True,
                              connect_timeout_s=30.0 + 10.0 * len(members),
                              prerecorded=prerecorded, agents_idle=args.agents_idle)
        time.sleep(args.settle)
        window = measure_window(dep, members, args.seconds)
        rec = api_get(dep, "/api/recorder")
        # An agent that died mid-run (see its log) invalidates the run's figures.
        exited = {c: dep.procs[c].popen.returncode for c in members
                  if dep.procs[c].popen.poll() is not None}
        dep.agent_command(pairing.main, "end")
        startup_s = time.monotonic() - t0
    cpu = window["cpu_percent_of_one_core"]
    # Inputs the agents could not send at the full rate (a starved agent) lighten the
    # mixer's load: such a run says nothing about the mixer at this N.
    inputs_fps = window["mixer_input_fps"]
    inputs_full = (len(inputs_fps) == len(members) and min(inputs_fps.values())
                   >= FRAME_RATE_OK * float(dep.config.media.fps))
    agents = {c: cpu.get(c, 0.0) for c in members}
    views = window["views"]
    keeps_up = not exited and all(v["frames_skipped"] == 0
                   and v["frames_composed"] >= FRAME_RATE_OK * v["frames_expected"]
                   for v in views.values()) and len(views) == 2
    return {
        "setup": setup,
        "estimator": dep.config.media.adaptation.estimator,
        "rural": rural,
        "lesson_id": lesson.get("lesson_id"),
        "camera_sizes": (f"all 1280x720, {len(prerecorded)} rural encoded ahead of time"
                         if light is None else
                         f"main + {min(args.light_keep, rural)} rural 1280x720, "
                         f"{max(0, rural - args.light_keep)} rural {args.light_size}"),
        "prerecorded": sorted(prerecorded),
        "mixer_cpu_percent": cpu.get("mixer"),
        "mixer_threads_cpu_percent": window["mixer_threads_cpu_percent"],
        "recorder_cpu_percent": cpu.get("recorder"),
        "agents_cpu_percent": agents,
        "agents_cpu_percent_total": round(sum(agents.values()), 1),
        "views": views,
        "composite_frames_composed": sum(v["frames_composed"] for v in views.values()),
        "composite_frames_skipped": sum(v["frames_skipped"] for v in views.values()),
        "keeps_up": keeps_up,
        "inputs_at_full_rate": inputs_full,
        "mixer_input_fps_min": min(inputs_fps.values(), default=None),
        "agents_exited": exited,
        "valid": not exited and inputs_full,
        "logs": str(work / "logs"),
        "latency_p50_ms_median": window["latency_p50_ms_median"],
        "latency_p95_ms_median": window["latency_p95_ms_median"],
        "latency_p95_ms_max": window["latency_p95_ms_max"],
        "recording": {k: rec.get(k) for k in ("recorders_connected", "sent", "dropped_queue",
                                              "dropped_hwm", "dropped_gop")},
        "window": window,
        "wall_s": round(startup_s, 1),
    }


def summarise(all_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Slopes and limits over the valid runs (no agent exited, every input at >= 95 % of
    its frame rate); the table lists all."""
    runs = [r for r in all_runs if r.get("valid", True)]
    xs = [float(r["rural"]) for r in runs]
    ys = [float(r["mixer_cpu_percent"]) for r in runs]
    ok = [r["rural"] for r in runs if r["keeps_up"]]
    # "Largest N before frames drop": the largest N such that every smaller measured N
    # kept up too.
    largest = None
    for r in sorted(runs, key=lambda r: r["rural"]):
        if not r["keeps_up"]:
            break
        largest = r["rural"]
    # Under overload the compose loop skips ticks and the mixer's CPU stops growing with
    # N; CPU per composed tick (both views) still shows the cost of each added classroom.
    per_tick = [10.0 * float(r["mixer_cpu_percent"]) * r["window"]["elapsed_s"]
                / max(1, r["composite_frames_composed"] // 2) for r in runs]
    kept = [r for r in runs if r["keeps_up"]]
    s_all = slope(xs, ys)
    s_kept = slope([float(r["rural"]) for r in kept], [float(r["mixer_cpu_percent"])
                                                        for r in kept])
    s_tick = slope(xs, per_tick)
    return {
        "marginal_mixer_cpu_percent_per_rural": None if s_all is None else round(s_all, 2),
        "marginal_mixer_cpu_percent_per_rural_runs_that_kept_up":
            None if s_kept is None else round(s_kept, 2),
        "mixer_cpu_ms_per_composed_tick": {r["rural"]: round(t, 2)
                                           for r, t in zip(runs, per_tick, strict=True)},
        "marginal_mixer_cpu_ms_per_tick_per_rural": None if s_tick is None
        else round(s_tick, 2),
        "largest_rural_without_dropped_composites": largest,
        "rural_counts_that_kept_up": ok,
        "table": [
            {k: r[k] for k in ("rural", "mixer_cpu_percent", "recorder_cpu_percent",
                               "agents_cpu_percent_total", "composite_frames_composed",
                               "composite_frames_skipped", "keeps_up", "valid",
                               "latency_p50_ms_median",
                               "latency_p95_ms_median")}
            | {"composed_fps": {n: v["composed_fps"] for n, v in r["views"].items()}}
            for r in sorted(all_runs, key=lambda r: r["rural"])
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rural", default="1,2,4,8",
                    help="comma-separated receiving-classroom counts (default 1,2,4,8)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window per run, s")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="wait after Start lesson before measuring, s")
    ap.add_argument("--setups", default="faithful,light",
                    help=f"comma-separated: {', '.join(SETUPS)} (default faithful,light)")
    ap.add_argument("--light-size", default="320x180",
                    help="camera WxH of the light receiving classrooms")
    ap.add_argument("--light-keep", type=int, default=1,
                    help="receiving classrooms that stay real 1280x720 agents in the light "
                         "and prerecorded setups")
    ap.add_argument("--prerecord-main", action="store_true",
                    help="prerecorded setup: the main classroom replays too (no classroom "
                         "then sends a timecode: no latency figures)")
    ap.add_argument("--agents-idle", action="store_true",
                    help="run the agents under SCHED_IDLE (chrt --idle 0): the mixer (the "
                         "machine under test; in a county the classrooms are other PCs) gets "
                         "all the CPU it asks for, the agents the rest")
    ap.add_argument("--adaptation", choices=("default", "on", "off"), default="default",
                    help="media.adaptation.enabled of the county (default: the county's)")
    ap.add_argument("--estimators", default="",
                    help="comma-separated media.adaptation.estimator values to alternate "
                         "per N and setup (e.g. remb,gcc: the sender-side estimator's cost "
                         "on a clean link, side by side); default: the county's")
    ap.add_argument("--work", type=Path, default=Path("/tmp/syncclass-bench-capacity"))
    ap.add_argument("--out", type=Path, default=RESULTS / "capacity.json")
    args = ap.parse_args()
    counts = [int(x) for x in args.rural.split(",") if x]
    setups = [s for s in args.setups.split(",") if s]
    for s in setups:
        if s not in SETUPS:
            ap.error(f"unknown setup {s!r} ({', '.join(SETUPS)})")
    try:
        parse_size(args.light_size)
    except ValueError as exc:
        ap.error(str(exc))
    if any(n < 1 for n in counts):
        ap.error("--rural counts must be >= 1")
    estimators: list[str | None] = [e for e in args.estimators.split(",") if e] or [None]
    for e in estimators:
        if e not in ("gcc", "remb", None):
            ap.error(f"unknown estimator {e!r} (gcc, remb)")
    env_start = environment()

    def run_key(setup: str, estimator: str | None) -> str:
        return setup if estimator is None else f"{setup}-{estimator}"

    runs: dict[str, list[dict[str, Any]]] = {run_key(s, e): [] for s in setups
                                             for e in estimators}
    for n, setup, estimator in itertools.product(counts, setups, estimators):
        key = run_key(setup, estimator)
        work = args.work / f"{key}-{n}"
        shutil.rmtree(work, ignore_errors=True)
        res = one_run(n, setup, args, work, estimator)
        runs[key].append(res)
        print(f"N={n} {key}: mixer {res['mixer_cpu_percent']} %, agents "
              f"{res['agents_cpu_percent_total']} %, recorder {res['recorder_cpu_percent']} %"
              f", composed {res['composite_frames_composed']} skipped "
              f"{res['composite_frames_skipped']} "
              f"{'' if res['valid'] else 'INVALID (an agent exited or sent < 95 % fps) '}"
              f"inputs >= {res['mixer_input_fps_min']} fps "
              f"({ {k: v['composed_fps'] for k, v in res['views'].items()} } fps), "
              f"p50 {res['latency_p50_ms_median']} p95 {res['latency_p95_ms_median']} ms, "
              f"load {env_start['load_avg'][0]}→{environment()['load_avg'][0]}", flush=True)
        print(f"  mixer threads (% of a core): {res['mixer_threads_cpu_percent']}",
              flush=True)
        print(f"  adaptation: {adaptation_summary(res['window']['adaptation'])}",
              flush=True)
    summaries = {s: summarise(rs) for s, rs in runs.items()}
    result = {
        "benchmark": "capacity",
        "environment_start": env_start,
        "environment_end": environment(),
        "args": {"rural": counts, "seconds": args.seconds, "settle": args.settle,
                 "agents_idle": args.agents_idle, "prerecord_main": args.prerecord_main,
                 "setups": setups, "light_size": args.light_size,
                 "light_keep": args.light_keep, "adaptation": args.adaptation,
                 "estimators": [e for e in estimators if e is not None]},
        "note": "views: students_view + teacher_view, 1280x720 @ county fps, each encoded "
                "once; recorder process subscribed. CPU in % of one core.",
        "summary": summaries,
        "runs": runs,
    }
    write_result(args.out, result)
    for s, summ in summaries.items():
        print(f"{s}: marginal mixer CPU {summ['marginal_mixer_cpu_percent_per_rural']} %/rural,"
              f" largest N without drops {summ['largest_rural_without_dropped_composites']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
