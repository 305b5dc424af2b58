"""Media workers (issue 20): lessons per node with 1 worker vs 2, and where a lesson's CPU goes.

**Lessons per node.** For each worker count in ``--workers`` (default 1,2) and each lesson
count K in ``--lessons`` (default 1,2,3,4; runs alternate between worker counts so machine
noise hits them alike), one node (``syncclass mixer`` with ``mixer.workers``) holds K
concurrent 1 + 2 lessons of cheap replayed classrooms (:mod:`benchmarks.load_classroom`:
their camera's H.264 was encoded once at start-up, so the agents spend no camera or
encoder CPU while the mixer decodes, composes and encodes as for real cameras). After
``--settle`` s a window of ``--seconds`` s counts every view's composed frames and skipped
ticks (``/api/stats``). A lesson count *keeps up* when every view of every lesson composed
>= 14.5 fps (``--min-fps``) with no skipped tick. Per worker count: the largest K that kept
up (every smaller K too), and the ratio 2 workers / 1 worker. Recording off, analytics on.

**CPU per 1 + N lesson** (``--cpu-rural``, default 8; 0 skips): one lesson of 1 + N
replayed 1280x720 classrooms on a node of one worker; CPU % of one core of the front and
of the worker (``psutil``), and the worker's split by kind of thread.

The machine may be shared: ``uptime`` is recorded before and after each run.

    .venv/bin/python -m benchmarks.workers --lessons 1,2,3,4 --seconds 10 \\
        --out benchmarks/results/workers.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from syncclass.demo import LocalDeployment

from ._common import API_TOKEN, api_get, load_classroom_argv
from .harness import RESULTS, ROOT, environment, write_result


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def node_county(work: Path, lessons: int, rural: int, workers: int,
                camera: tuple[int, int], view: tuple[int, int]) -> Path:
    """The sample county with ``lessons`` pairings of 1 main + ``rural`` receiving
    classrooms each (``main-k``, ``rural-k-i``), ``mixer.workers`` = ``workers``."""
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    main_t = next(c for c in data["classrooms"] if c["role"] == "main")
    rural_t = next(c for c in data["classrooms"] if c["role"] == "receiving")
    rooms, pairings, timetable = [], [], []
    cam = {"kind": "synthetic", "width": camera[0], "height": camera[1]}
    for k in range(lessons):
        rooms.append(dict(main_t, id=f"main-{k}", label=f"Main {k}", name=f"主讲 {k}",
                          token=f"bench-main-token-{k:04d}-abcdef", devices={"camera": cam}))
        for i in range(rural):
            rooms.append(dict(rural_t, id=f"rural-{k}-{i}", label=f"Rural {k}-{i}",
                              name=f"教学点 {k}-{i}", tone_hz=500 + 100 * i,
                              token=f"bench-rural-token-{k:02d}{i:02d}-abcdef",
                              devices={"camera": cam}))
        pairings.append({"id": f"pair-{k}", "main": f"main-{k}",
                         "receiving": [f"rural-{k}-{i}" for i in range(rural)]})
        timetable.append(dict(data["timetable"][0], id=f"lesson-{k}", pairing=f"pair-{k}"))
    data.update(classrooms=rooms, pairings=pairings, timetable=timetable, observers=[])
    data["mixer"].update(workers=workers, data_dir=str(work / "mixer-data"))
    data["media"].update(width=view[0], height=view[1])
    data["recorder"] = {"enabled": False}
    data.setdefault("ops", {})["api_token"] = API_TOKEN
    work.mkdir(parents=True, exist_ok=True)
    path = work / "county.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _cpu_split(mixer: psutil.Process) -> dict[str, float]:
    """CPU seconds of the front and of each live worker (its children)."""
    out = {}
    with_children = [("front", mixer)] + [(f"worker-pid-{c.pid}", c)
                                          for c in mixer.children(recursive=True)]
    for name, ps in with_children:
        try:
            t = ps.cpu_times()
        except psutil.Error:
            continue
        out[name] = t.user + t.system
    return out


def run_node(lessons: int, rural: int, workers: int, args: argparse.Namespace,
             work: Path, camera: tuple[int, int], view: tuple[int, int]) -> dict[str, Any]:
    """Hold ``lessons`` concurrent lessons on one node and measure a window."""
    shutil.rmtree(work, ignore_errors=True)
    config = node_county(work, lessons, rural, workers, camera, view)
    load_before = _load()
    with LocalDeployment(config, work, log_level="warning") as dep:
        pairings = dep.config.pairings
        members = [c for p in pairings for c in (p.main, *p.receiving)]
        mixer_proc = dep.start_mixer(timeout=60)
        for cid in members:
            dep.start_agent(cid, out_dir=work / "classrooms", wrap=load_classroom_argv)
        dep.wait_for(lambda: set(members) <= set(api_get(dep, "/api/lessons")["classrooms"]),
                     30 + 5 * len(members), "classrooms connected")
        for p in pairings:
            status, lesson = dep.agent_command(p.main, "start")
            if status != 200:
                raise RuntimeError(f"start lesson failed: {status} {lesson}")
        time.sleep(args.settle)
        ps = psutil.Process(mixer_proc.popen.pid)
        stats0, cpu0 = api_get(dep, "/api/stats"), _cpu_split(ps)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        stats1, cpu1 = api_get(dep, "/api/stats"), _cpu_split(ps)
        elapsed = time.monotonic() - t0
        node = stats1.get("node", {})
        lessons_info = api_get(dep, "/api/lessons")["lessons"]
        exited = [c for c in members if dep.procs[c].popen.poll() is not None]
    cpu = {k: round(100.0 * (v - cpu0.get(k, 0.0)) / elapsed, 1) for k, v in cpu1.items()}
    views: dict[str, dict[str, Any]] = {}
    for lid, m1 in stats1["media"].items():
        m0 = stats0["media"].get(lid, {})
        for name, v1 in (m1.get("views") or {}).items():
            v0 = (m0.get("views") or {}).get(name, {})
            composed = v1["frames_composed"] - v0.get("frames_composed", 0)
            views[f"{lid}/{name}"] = {
                "composed_fps": round(composed / elapsed, 2),
                "frames_skipped": v1["frames_skipped"] - v0.get("frames_skipped", 0)}
    inputs_ok = all(v["frames"] > 0 for m in stats1["media"].values()
                    for v in (m.get("video_inputs") or {}).values())
    keeps_up = (not exited and len(views) == 2 * lessons and inputs_ok
                and all(v["composed_fps"] >= args.min_fps and v["frames_skipped"] == 0
                        for v in views.values()))
    return {
        "workers": workers, "lessons": lessons, "rural_per_lesson": rural,
        "keeps_up": keeps_up, "views": views, "elapsed_s": round(elapsed, 2),
        "cpu_percent_of_one_core": cpu,
        "cpu_percent_front": cpu.get("front"),
        "cpu_percent_workers_total": round(sum(v for k, v in cpu.items() if k != "front"), 1),
        "lessons_per_worker": {str(w["worker"]): len(w["lessons"])
                               for w in node.get("workers", [])},
        "worker_threads_cpu_s": {str(w["worker"]): (w.get("process") or {}).get("thread_cpu_s")
                                 for w in node.get("workers", [])},
        "placement": {x["lesson_id"]: x.get("worker") for x in lessons_info},
        "agents_exited": exited,
        "load_before": load_before, "load_after": _load(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    ap.add_argument("--lessons", default="1,2,3,4",
                    help="concurrent 1 + 2 lessons to try (default 1,2,3,4)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window, s")
    ap.add_argument("--settle", type=float, default=8.0, help="wait after start, s")
    ap.add_argument("--min-fps", type=float, default=14.5)
    ap.add_argument("--camera", default="640x360", help="classroom camera size")
    ap.add_argument("--view", default="640x360", help="composed view size")
    ap.add_argument("--cpu-rural", type=int, default=8,
                    help="receiving classrooms of the CPU-split lesson (0: skip)")
    ap.add_argument("--out", default=str(RESULTS / "workers.json"))
    args = ap.parse_args()
    size = [tuple(int(x) for x in s.split("x")) for s in (args.camera, args.view)]
    camera, view = (size[0][0], size[0][1]), (size[1][0], size[1][1])
    work_root = Path("/tmp/syncclass-bench-workers")
    counts = [int(x) for x in args.workers.split(",")]
    runs: list[dict[str, Any]] = []
    failed: set[int] = set()
    for k in [int(x) for x in args.lessons.split(",")]:
        for w in counts:
            if w in failed:
                continue
            print(f"workers={w} lessons={k} ... ({_load()})", file=sys.stderr, flush=True)
            r = run_node(k, 2, w, args, work_root / f"w{w}-l{k}", camera, view)
            runs.append(r)
            print(f"  keeps_up={r['keeps_up']} cpu={r['cpu_percent_of_one_core']} "
                  f"fps={[v['composed_fps'] for v in r['views'].values()]}",
                  file=sys.stderr, flush=True)
            if not r["keeps_up"]:
                failed.add(w)
    largest: dict[str, int] = {}
    for w in counts:
        kept = 0
        for r in sorted((r for r in runs if r["workers"] == w), key=lambda r: r["lessons"]):
            if not r["keeps_up"]:
                break
            kept = r["lessons"]
        largest[str(w)] = kept
    ratio = (round(largest["2"] / largest["1"], 2)
             if "1" in largest and "2" in largest and largest["1"] else None)
    cpu_split = None
    if args.cpu_rural:
        print(f"CPU split: one 1 + {args.cpu_rural} lesson, 1280x720 ({_load()})",
              file=sys.stderr, flush=True)
        cpu_split = run_node(1, args.cpu_rural, 1, args, work_root / "cpu-split",
                             (1280, 720), (1280, 720))
    result = {
        "benchmark": "workers",
        "command": "python -m " + " ".join(["benchmarks.workers", *sys.argv[1:]]),
        "environment": environment(),
        "settings": {"camera": args.camera, "view": args.view, "seconds": args.seconds,
                     "settle": args.settle, "min_fps": args.min_fps,
                     "lesson": "1 main + 2 receiving, replayed H.264 cameras"},
        "largest_lessons_kept_up": largest,
        "ratio_2_workers_over_1": ratio,
        "runs": runs,
        "cpu_split_1_plus_n": cpu_split,
    }
    write_result(args.out, result)
    print(yaml.safe_dump({"largest_lessons_kept_up": largest, "ratio": ratio,
                          "cpu_split": None if cpu_split is None else {
                              k: cpu_split[k] for k in ("cpu_percent_front",
                                                        "cpu_percent_workers_total",
                                                        "keeps_up", "load_after")}},
                         allow_unicode=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
