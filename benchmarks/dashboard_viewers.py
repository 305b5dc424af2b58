"""Do dashboard viewers slow the mixer? One lesson, phases with 0 and N live viewers
alternating (so machine noise hits both alike), medians written to JSON.

A viewer logs in and keeps ``/dashboard/events`` (server-sent events) open, parsing every
sample as the page does. Per phase: the mixer's composed frame rate (students_view), what
the classrooms decode (frames/s), glass-to-glass latency p50 the receiving classrooms
measure (their 30 s window at 15 fps, read at the phase's end: phases should be longer),
mixer CPU and event-loop lag (read from /metrics every second).

    .venv/bin/python benchmarks/dashboard_viewers.py --viewers 10 --phase 45 --rounds 2 \
        --out benchmarks/results/dashboard_viewers.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from syncclass.config import default_config_path
from syncclass.demo import LocalDeployment

USER, PASSWORD = "ops", "syncclass-demo"


async def viewer(url: str, stop: asyncio.Event, counts: list[int], i: int) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(url + "/dashboard/login", data={"user": USER, "password": PASSWORD},
                             allow_redirects=False) as resp:
            if resp.status != 303:
                raise RuntimeError(f"viewer {i}: login failed ({resp.status})")
        async with http.get(url + "/dashboard/events") as resp:
            async def read() -> None:
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        json.loads(line[6:])
                        counts[i] += 1

            reader = asyncio.ensure_future(read())
            await stop.wait()
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass


def loop_lag_s(url: str) -> float:
    """The mixer's event-loop lag from /metrics (how late its 1 s sampler woke), s."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("syncclass_mixer_event_loop_lag_seconds "))


def measure(dep: LocalDeployment, members: list[str], main: str, seconds: float) -> dict[str, Any]:
    mixer = dep.procs["mixer"]
    cpu0 = mixer.cpu_s()
    s0 = dep.mixer_stats()
    r0 = {c: dep.agent_status(c)["reception"]["frames_received"] for c in members}
    t0 = time.monotonic()
    lags: list[float] = []
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        lags.append(loop_lag_s(dep.mixer_url))
    elapsed = time.monotonic() - t0
    s1 = dep.mixer_stats()
    status = {c: dep.agent_status(c) for c in members}
    cpu = 100.0 * (mixer.cpu_s() - cpu0) / elapsed

    def composed(stats: dict[str, Any]) -> int:
        media = next(iter(stats["media"].values()))
        return int(media["views"]["students_view"]["frames_composed"])

    rx_fps = [(status[c]["reception"]["frames_received"] - r0[c]) / elapsed for c in members]
    p50 = [status[c]["reception"]["latency_ms"][main]["p50_ms"]
           for c in members if c != main]
    return {
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "mixer_fps": round((composed(s1) - composed(s0)) / elapsed, 2),
        "received_fps_median": round(statistics.median(rx_fps), 2),
        "teacher_latency_p50_ms_median": round(statistics.median(p50), 1),
        "mixer_cpu_percent": round(cpu, 1),
        "loop_lag_ms_median": round(statistics.median(lags) * 1000, 1),
        "loop_lag_ms_max": round(max(lags) * 1000, 1),
    }


async def run(viewers: int, phase_s: float, rounds: int, settle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        dep = LocalDeployment(default_config_path(), Path(tmp))
        try:
            pairing = dep.config.pairings[0]
            members = [pairing.main, *pairing.receiving]
            await asyncio.to_thread(dep.start_mixer)
            for cid in members:
                dep.start_agent(cid)
            await asyncio.to_thread(
                dep.wait_for, lambda: set(members) <= set(dep.mixer_status()["classrooms"]),
                30, "agents connected")
            status, _ = dep.agent_command(pairing.main, "start")
            assert status == 200
            await asyncio.sleep(settle_s)
            phases: list[dict[str, Any]] = []
            for r in range(rounds):
                for n in (0, viewers):
                    stop = asyncio.Event()
                    counts = [0] * n
                    tasks = [asyncio.ensure_future(viewer(dep.mixer_url, stop, counts, i))
                             for i in range(n)]
                    await asyncio.sleep(2.0 if n else 0.0)  # logins done, streams open
                    m = await asyncio.to_thread(measure, dep, members, pairing.main, phase_s)
                    stop.set()
                    await asyncio.gather(*tasks)
                    m.update(round=r, viewers=n, samples_received_per_viewer=(
                        statistics.median(counts) if counts else 0))
                    print(json.dumps(m), flush=True)
                    phases.append(m)
            dep.agent_command(pairing.main, "end")
        finally:
            dep.stop_all()
    summary: dict[str, Any] = {}
    for n in (0, viewers):
        rows = [p for p in phases if p["viewers"] == n]
        summary[f"{n}_viewers"] = {
            k: statistics.median(p[k] for p in rows)
            for k in ("load_avg_1m", "mixer_fps", "received_fps_median",
                      "teacher_latency_p50_ms_median", "mixer_cpu_percent",
                      "loop_lag_ms_median", "loop_lag_ms_max")
        }
    return {"viewers": viewers, "phase_s": phase_s, "rounds": rounds, "phases": phases,
            "median": summary}


async def micro(samples: int) -> dict[str, Any]:
    """Event-loop CPU the mixer spends per health sample on the dashboard (snapshot →
    JSON, once for all viewers), in-process with a live lesson composing; thread CPU time,
    so other processes' load does not count."""
    from aiohttp import web

    from mixer.app import create_app
    from mixer.core import MIXER_KEY
    from mixer.dashboard import OPS_KEY
    from syncclass.config import load_config

    app = create_app(load_config(default_config_path()))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        mixer, ops = app[MIXER_KEY], app[OPS_KEY]
        mixer.lessons.start(mixer.config.pairings[0].main)
        for _ in range(5):
            await ops.netstats.sample()
            await asyncio.sleep(0.2)
        snap, mh = ops.netstats.snapshot(), ops.netstats.mixer_health()
        assert mh is not None
        ops.broadcaster.viewers = 10
        publish_ms, sample_ms = [], []
        for _ in range(samples):
            t = time.thread_time()
            ops._publish(snap, mh)
            publish_ms.append((time.thread_time() - t) * 1000)
            t = time.thread_time()
            await ops.netstats.sample()
            sample_ms.append((time.thread_time() - t) * 1000)
        ops.broadcaster.viewers = 0
        size = len(ops.broadcaster.payload)
    finally:
        await runner.cleanup()
    return {"samples": samples, "payload_bytes": size,
            "publish_ms_median": round(statistics.median(publish_ms), 3),
            "health_sample_ms_median": round(statistics.median(sample_ms), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", type=int, default=10)
    ap.add_argument("--phase", type=float, default=45.0, help="seconds per phase")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=float, default=8.0, help="seconds before measuring")
    ap.add_argument("--out", default="benchmarks/results/dashboard_viewers.json")
    ap.add_argument("--micro", type=int, default=200,
                    help="in-process samples timed for the per-sample cost (0: skip)")
    args = ap.parse_args()
    result: dict[str, Any] = {}
    if args.rounds:  # --rounds 0: only the in-process per-sample cost
        result = asyncio.run(run(args.viewers, args.phase, args.rounds, args.settle))
    if args.micro:
        result["per_sample_cost"] = asyncio.run(micro(args.micro))
        print(json.dumps(result["per_sample_cost"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if "median" in result:
        print(json.dumps(result["median"], indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
