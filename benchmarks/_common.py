"""Lessons of real processes for the benchmarks: a county of 1 main + N receiving
classrooms, starting the lesson, and measuring a window of it (capacity, soak, recovery,
reference_ffmpeg, p2p_latency). Where results go and their environment:
:mod:`benchmarks.harness`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from syncclass.demo import LocalDeployment, http_json
from syncclass.stats import median_or_none as _median_or_none

from .harness import ROOT

__all__ = [
    "API_TOKEN", "api_get", "county_config", "latency_pairs", "load_classroom_argv",
    "make_config", "measure_window", "median_or_none", "start_lesson",
]

API_TOKEN = "benchmark-ops-api-token-0123456789"
"""``ops.api_token`` of the benchmark counties: the mixer's read APIs need a credential."""


def make_config(tmp: Path, rural: int) -> Path:
    """The sample county (``configs/county.yaml``) with its main classroom and ``rural``
    receiving classrooms ``rural-0`` … (distinct tones), written to ``tmp/county.yaml``."""
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    template = next(c for c in data["classrooms"] if c["role"] == "receiving")
    rooms = [c for c in data["classrooms"] if c["role"] == "main"]
    for i in range(rural):
        rooms.append(dict(template, id=f"rural-{i}", label=f"Rural {i}", name=f"教学点 {i}",
                          token=f"soak-rural-token-{i:04d}-abcdef", tone_hz=500 + 100 * i))
    data["classrooms"] = rooms
    data["pairings"] = [dict(data["pairings"][0], receiving=[f"rural-{i}" for i in range(rural)])]
    data["observers"] = []
    data["mixer"]["data_dir"] = str(tmp / "mixer-data")
    # One mixer process, as these benchmarks have always measured (its threads' split in
    # /api/stats); benchmarks/workers.py measures nodes with media workers.
    data["mixer"]["workers"] = 0
    path = tmp / "county.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def county_config(work: Path, rural: int, light_size: tuple[int, int] | None = None,
                  light_keep: int = 1, adaptation: bool | None = None,
                  estimator: str | None = None) -> Path:
    """The sample county with 1 main + ``rural`` receiving classrooms (:func:`make_config`),
    with ``ops.api_token`` = :data:`API_TOKEN` (the mixer's read APIs need a credential).

    With ``light_size`` (width, height px), every receiving classroom after the first
    ``light_keep`` sends a synthetic camera of that size instead of 1280x720 (same fps):
    cheaper agents, so that a 2-core machine can host more of them. The main classroom
    always sends 1280x720. ``adaptation`` sets ``media.adaptation.enabled`` (None: the
    default); ``estimator`` its ``estimator`` (``gcc``/``remb``; None: the default).
    """
    work.mkdir(parents=True, exist_ok=True)
    path = make_config(work, rural)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.setdefault("ops", {})["api_token"] = API_TOKEN
    if adaptation is not None:
        media = data.setdefault("media", {})
        media["adaptation"] = {**(media.get("adaptation") or {}), "enabled": adaptation}
    if estimator is not None:
        media = data.setdefault("media", {})
        media["adaptation"] = {**(media.get("adaptation") or {}), "estimator": estimator}
    if light_size is not None:
        rurals = [c for c in data["classrooms"] if c["role"] == "receiving"]
        for room in rurals[light_keep:]:
            devices = dict(room.get("devices") or {})
            camera = dict(devices.get("camera") or {})
            camera.update(kind="synthetic", width=light_size[0], height=light_size[1])
            devices["camera"] = camera
            room["devices"] = devices
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def api_get(dep: LocalDeployment, path: str) -> dict[str, Any]:
    """GET a mixer API with the benchmark's ops token; raises on a non-200 answer."""
    status, body = http_json(dep.mixer_url + path, token=API_TOKEN)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body}")
    return dict(body)


def latency_pairs(reception: dict[str, Any] | None, receiver: str) -> list[dict[str, Any]]:
    """(receiver, source, p50_ms, p95_ms, frames) rows from an agent's ``reception``
    summary (glass-to-glass: capture timecode → decoded at the receiving agent, ms)."""
    rows = []
    for source, lat in ((reception or {}).get("latency_ms") or {}).items():
        if "p50_ms" in lat:
            rows.append({"receiver": receiver, "source": source, "p50_ms": lat["p50_ms"],
                         "p95_ms": lat["p95_ms"], "frames": lat["frames_read"]})
    return rows


def median_or_none(values: Sequence[float]) -> float | None:
    """The median rounded to 0.01, or ``None`` for no values."""
    return _median_or_none(values, 2)


def start_lesson(dep: LocalDeployment, members: list[str], *, recorder: bool,
                 connect_timeout_s: float = 90.0,
                 prerecorded: frozenset[str] = frozenset(),
                 agents_idle: bool = False) -> dict[str, Any]:
    """Start the mixer (+ recorder) and one agent per classroom, wait until all are
    connected, press Start lesson on the main classroom; returns the lesson. Classrooms in
    ``prerecorded`` run :mod:`benchmarks.load_classroom` (their camera encoded ahead of time); with
    ``agents_idle`` the agents run under ``SCHED_IDLE`` (``chrt --idle 0``): they get only
    the CPU that the mixer and the recorder leave."""
    dep.start_mixer()
    if recorder:
        dep.start_recorder()
    for cid in members:
        def wrap(argv: list[str], cid: str = cid) -> list[str]:
            if cid in prerecorded:
                argv = load_classroom_argv(argv)
            return ["chrt", "--idle", "0", *argv] if agents_idle else argv
        dep.start_agent(cid, out_dir=dep.work_dir / "classrooms", wrap=wrap)
    dep.wait_for(lambda: set(members) <= set(api_get(dep, "/api/lessons")["classrooms"]),
                 connect_timeout_s, "classrooms connected")
    status, lesson = dep.agent_command(members[0], "start")
    if status != 200:
        raise RuntimeError(f"start lesson failed: {status} {lesson}")
    return dict(lesson)


def load_classroom_argv(argv: list[str]) -> list[str]:
    """``python -m syncclass …`` → ``python -m benchmarks.load_classroom …`` (run from the
    repository root, like every benchmark)."""
    if argv[1:3] != ["-m", "syncclass"]:
        raise ValueError(f"not a syncclass command line: {argv[:3]}")
    return [argv[0], "-m", "benchmarks.load_classroom", *argv[3:]]


def measure_window(dep: LocalDeployment, members: list[str], seconds: float) -> dict[str, Any]:
    """Measure a running lesson for ``seconds``: CPU % of one core of every process,
    the mixer's view/input counters (deltas), and the agents' latency summaries at the
    end of the window (an agent's summary covers its whole lesson so far)."""
    # Each source is divided by its own interval: asking nine agents for their status
    # takes seconds on a loaded machine, which must not count as window for the mixer.
    rx_t0 = time.monotonic()
    rx0 = {c: (dep.agent_status(c).get("reception") or {}) for c in members}
    stats0 = api_get(dep, "/api/stats")
    cpu0 = {n: p.cpu_s() for n, p in dep.procs.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1 = {n: p.cpu_s() for n, p in dep.procs.items()}
    stats1 = api_get(dep, "/api/stats")
    elapsed = time.monotonic() - t0
    cpu = {n: round(100.0 * (cpu1[n] - cpu0[n]) / elapsed, 1) for n in cpu1}
    status1 = {c: dep.agent_status(c) for c in members}
    rx1 = {c: (status1[c].get("reception") or {}) for c in members}
    rx_elapsed = time.monotonic() - rx_t0
    media0: dict[str, Any] = next(iter(stats0["media"].values()), {})
    media1: dict[str, Any] = next(iter(stats1["media"].values()), {})
    fps = float(dep.config.media.fps)
    views: dict[str, Any] = {}
    for name, v1 in (media1.get("views") or {}).items():
        v0 = (media0.get("views") or {}).get(name, {})
        composed = v1["frames_composed"] - v0.get("frames_composed", 0)
        skipped = v1["frames_skipped"] - v0.get("frames_skipped", 0)
        views[name] = {
            "frames_composed": composed,
            "frames_skipped": skipped,
            "frames_expected": round(fps * elapsed, 1),
            "composed_fps": round(composed / elapsed, 2),
            "mean_encode_ms": round(v1["encoder"]["mean_encode_ms"], 2),
        }
    inputs = {
        cid: round((v["frames"] - (media0.get("video_inputs") or {}).get(cid, {}).get("frames", 0))
                   / elapsed, 2)
        for cid, v in (media1.get("video_inputs") or {}).items()
    }
    received_fps = {
        c: round((rx1[c].get("frames_received", 0) - rx0[c].get("frames_received", 0))
                 / rx_elapsed, 2)
        for c in members
    }
    pairs = [row for c in members for row in latency_pairs(rx1[c], c)]
    threads0 = (stats0.get("process") or {}).get("thread_cpu_s") or {}
    threads1 = (stats1.get("process") or {}).get("thread_cpu_s") or {}
    mixer_threads = dict(sorted(
        ((name, round(100.0 * (s - threads0.get(name, 0.0)) / elapsed, 1))
         for name, s in threads1.items()), key=lambda kv: -kv[1]))
    # What adaptation did by the end of the window (media.adaptation): each agent's uplink
    # encoder changes and target, each view's low rendition and subscribers on it.
    adaptation = {
        "uplinks": {c: status1[c].get("uplink") for c in members},
        "views": {
            name: None if v1.get("renditions") is None else {
                "low_encoders_created": v1["renditions"]["low_encoders_created"],
                "switches": v1["renditions"]["switches"],
                "on_low": sorted(c for c, sub in v1["renditions"]["subscribers"].items()
                                 if sub["route"] == "low"),
            }
            for name, v1 in (media1.get("views") or {}).items()
        },
    }
    return {
        "elapsed_s": round(elapsed, 2),
        "adaptation": adaptation,
        "cpu_percent_of_one_core": cpu,
        "mixer_threads_cpu_percent": mixer_threads,
        "views": views,
        "mixer_input_fps": inputs,
        "agent_received_fps": received_fps,
        "latency_pairs": pairs,
        "latency_p50_ms_median": median_or_none([p["p50_ms"] for p in pairs]),
        "latency_p95_ms_median": median_or_none([p["p95_ms"] for p in pairs]),
        "latency_p95_ms_max": max((p["p95_ms"] for p in pairs), default=None),
        "freezes": {c: rx1[c].get("freezes") for c in members},
    }
