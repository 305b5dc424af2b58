"""Live HLS from ``syncclass media-server``: many viewers on loopback, and how far behind
the classroom a browser viewer is.

One lesson (mixer, recorder, media server and the sample county's three agents as real
processes). Phases with 0 and N HLS viewers alternate (so machine noise hits both alike).
A viewer is a bounded aiohttp client, one connection, polling the lesson's playlist every
``--poll`` seconds and fetching each new segment once, in order, starting from the last
two listed (as a player a few seconds behind the live edge does). A watcher notes when each
segment first appears in the playlist on disk; a viewer got a segment *on time* if it had
the whole segment within that segment's duration of its appearance (a player 3 s behind
the edge has that long before it would stall). Per phase, as in dashboard_viewers.py: the
mixer's composed frame rate and CPU, what the classrooms decode, glass-to-glass latency
p50 the receiving classrooms measure (their 30 s window, read at the phase's end), and the
media server's and recorder's CPU.

Then a Chromium viewer (the watch page, hls.js) for ``--browser`` seconds: its delay behind
the classroom = when a picture is shown − the teacher's capture time burned into it (same
machine, same clock), sampled twice a second after ``--settle`` seconds.

    .venv/bin/python benchmarks/hls_live.py --viewers 200 --phase 40 --rounds 2 \
        --out benchmarks/results/hls_live.json

``--server-only``: no lesson; the media server alone is fed a real 2 s 720p segment every
2 s (what its capacity is, apart from the mixer's and agents' CPU):

    .venv/bin/python benchmarks/hls_live.py --server-only --viewers 200 --phase 40 \
        --rounds 2 --out benchmarks/results/hls_live_server_only.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from syncclass.config import load_config
from syncclass.demo import LocalDeployment, free_port
from syncclass.stats import median, percentile
from syncclass.testing.browser import chromium
from syncclass.testing.hls_support import CONFIG, LiveLesson, grab, live_lesson, teacher_rect

from .harness import write_result


@dataclass
class Listing:
    """When each segment first appeared in the playlist on disk (epoch s) and its length."""

    listed_at: dict[str, float] = field(default_factory=dict)
    duration_s: dict[str, float] = field(default_factory=dict)


def parse_playlist(text: str) -> list[tuple[str, float]]:
    out, dur = [], 0.0
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            dur = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            out.append((line, dur))
    return out


async def watch_listing(path: Path, listing: Listing, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            text = await asyncio.to_thread(path.read_text)
        except OSError:
            text = ""
        now = time.time()
        for name, dur in parse_playlist(text):
            if name not in listing.listed_at:
                listing.listed_at[name] = now
                listing.duration_s[name] = dur
        await asyncio.sleep(0.05)


@dataclass
class ViewerResult:
    got: dict[str, float] = field(default_factory=dict)
    """Segment → epoch s its last byte arrived."""
    first: str | None = None
    errors: int = 0
    bytes: int = 0


async def viewer(base: str, token: str, poll_s: float, stop: asyncio.Event,
                 result: ViewerResult) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    await asyncio.sleep(random.uniform(0, poll_s))  # viewers arrive spread over a poll
    conn = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, headers=headers) as http:
        fetched: set[str] = set()
        while not stop.is_set():
            try:
                async with http.get(base + "index.m3u8") as resp:
                    resp.raise_for_status()
                    listed = [n for n, _ in parse_playlist(await resp.text())]
                if result.first is None and listed:
                    start = listed[-2:] if len(listed) >= 2 else listed
                    result.first = start[0]
                    fetched.update(listed[: len(listed) - len(start)])
                for name in listed:
                    if name in fetched:
                        continue
                    async with http.get(base + name) as resp:
                        resp.raise_for_status()
                        result.bytes += len(await resp.read())
                    result.got[name] = time.time()
                    fetched.add(name)
            except (aiohttp.ClientError, TimeoutError):
                result.errors += 1
            try:
                async with asyncio.timeout(poll_s):
                    await stop.wait()
            except TimeoutError:
                pass


def judge(results: list[ViewerResult], listing: Listing, until: float) -> dict[str, Any]:
    """Every viewer, every segment listed after its first one (and at least a segment's
    duration before the phase ended): got it, and within that duration of its listing?"""
    order = sorted(listing.listed_at, key=listing.listed_at.__getitem__)
    due = late = missing = 0
    lateness: list[float] = []
    for r in results:
        if r.first is None or r.first not in order:
            missing += 1
            continue
        for name in order[order.index(r.first):]:
            listed, dur = listing.listed_at[name], listing.duration_s[name]
            if listed + dur > until:
                continue
            due += 1
            done = r.got.get(name)
            if done is None:
                missing += 1
                continue
            lateness.append(done - listed)
            if done - listed > dur:
                late += 1
    lateness_or_0 = lateness or [0.0]
    return {"segments_due": due, "late": late, "missing": missing,
            "fetch_after_listing_ms_p50": round(percentile(lateness_or_0, 50) * 1000, 1),
            "fetch_after_listing_ms_p99": round(percentile(lateness_or_0, 99) * 1000, 1),
            "fetch_after_listing_ms_max": round(max(lateness, default=0.0) * 1000, 1),
            "viewer_errors": sum(r.errors for r in results),
            "mbytes_served": round(sum(r.bytes for r in results) / 1e6, 1)}


def measure(dep: LocalDeployment, members: list[str], main: str, seconds: float
            ) -> dict[str, Any]:
    procs = {n: dep.procs[n] for n in ("mixer", "recorder", "media-server")}
    cpu0 = {n: p.cpu_s() for n, p in procs.items()}
    me = psutil.Process()
    me0 = sum(me.cpu_times()[:2])
    s0 = dep.mixer_stats()
    r0 = {c: dep.agent_status(c)["reception"]["frames_received"] for c in members}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    s1 = dep.mixer_stats()
    status = {c: dep.agent_status(c) for c in members}
    cpu = {n: round(100.0 * (p.cpu_s() - cpu0[n]) / elapsed, 1) for n, p in procs.items()}

    def composed(stats: dict[str, Any]) -> int:
        media = next(iter(stats["media"].values()))
        return int(media["views"]["students_view"]["frames_composed"])

    rx_fps = [(status[c]["reception"]["frames_received"] - r0[c]) / elapsed for c in members]
    p50 = [status[c]["reception"]["latency_ms"][main]["p50_ms"] for c in members if c != main]
    return {
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "mixer_fps": round((composed(s1) - composed(s0)) / elapsed, 2),
        "received_fps_median": round(median(rx_fps), 2),
        "teacher_latency_p50_ms_median": round(median(p50), 1),
        "mixer_cpu_percent": cpu["mixer"],
        "recorder_cpu_percent": cpu["recorder"],
        "media_server_cpu_percent": cpu["media-server"],
        "load_generator_cpu_percent": round(100.0 * (sum(me.cpu_times()[:2]) - me0)
                                            / elapsed, 1),
    }


async def load_phases(live: LiveLesson, viewers: int, phase_s: float, rounds: int,
                      poll_s: float) -> list[dict[str, Any]]:
    dep = live.dep
    pairing = dep.config.pairings[0]
    members = [pairing.main, *pairing.receiving]
    token = dep.config.observers[0].token
    base = f"{live.media_url}/live/{live.lesson_id}/"
    phases: list[dict[str, Any]] = []
    for r in range(rounds):
        for n in (0, viewers):
            stop = asyncio.Event()
            listing = Listing()
            watcher = asyncio.ensure_future(
                watch_listing(live.lesson_dir() / "index.m3u8", listing, stop))
            results = [ViewerResult() for _ in range(n)]
            tasks = [asyncio.ensure_future(viewer(base, token, poll_s, stop, res))
                     for res in results]
            await asyncio.sleep(poll_s + 1.0 if n else 0.0)  # every viewer has started
            m = await asyncio.to_thread(measure, dep, members, pairing.main, phase_s)
            until = time.time()
            stop.set()
            await asyncio.gather(watcher, *tasks)
            m.update(round=r, viewers=n)
            if n:
                m.update(judge(results, listing, until))
            print(json.dumps(m), flush=True)
            phases.append(m)
    return phases


def browser_delay(live: LiveLesson, seconds: float, settle_s: float) -> dict[str, Any]:
    rect = teacher_rect(live.config)
    token = live.config.observers[0].token
    delays: list[int] = []
    unread = 0
    with chromium() as ctx:
        page = ctx.new_page()
        page.goto(f"{live.media_url}/live/{live.lesson_id}/?token={token}")
        page.wait_for_function("() => document.getElementById('video').currentTime > 0.5",
                               timeout=30_000)
        time.sleep(settle_s)
        t0 = time.monotonic()
        ct0 = page.evaluate("document.getElementById('video').currentTime")
        while time.monotonic() - t0 < seconds:
            shown = grab(page, rect)
            if shown is None or shown.delay_ms is None:
                unread += 1
            else:
                delays.append(shown.delay_ms)
            time.sleep(0.5)
        played = page.evaluate("document.getElementById('video').currentTime") - ct0
        hls_latency = page.evaluate("window.syncclassWatch.hls.latency")
        errors = page.evaluate("window.syncclassWatch.errors")
    return {"samples": len(delays), "unreadable": unread,
            "delay_ms_p50": round(median(delays)), "delay_ms_p95": round(percentile(delays, 95)),
            "delay_ms_min": min(delays), "delay_ms_max": max(delays),
            "played_s_per_s": round(played / (time.monotonic() - t0), 3),
            "hls_js_latency_s_at_end": round(float(hls_latency), 2), "errors": errors}


def _publish(lesson_dir: Path, data: bytes, i: int, entries: list[str],
             duration_s: float) -> None:
    seg_dir = lesson_dir / "segments"
    seg_dir.mkdir(parents=True, exist_ok=True)
    name = f"seg_{i:06d}.ts"
    tmp = seg_dir / (name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, seg_dir / name)
    entries += [f"#EXTINF:{duration_s:.3f},", f"segments/{name}"]
    head = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{round(duration_s)}",
            "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-MEDIA-SEQUENCE:0"]
    (lesson_dir / "index.m3u8.tmp").write_text("\n".join(head + entries) + "\n")
    os.replace(lesson_dir / "index.m3u8.tmp", lesson_dir / "index.m3u8")


async def feed_segments(lesson_dir: Path, data: bytes, duration_s: float,
                        stop: asyncio.Event) -> None:
    """Play the recorder's part without a lesson: every ``duration_s`` a new segment (a copy
    of ``data``) is renamed into place and the EVENT playlist rewritten atomically."""
    entries: list[str] = []
    i = 0
    next_t = time.monotonic()
    while not stop.is_set():
        await asyncio.to_thread(_publish, lesson_dir, data, i, entries, duration_s)
        i += 1
        next_t += duration_s
        try:
            async with asyncio.timeout(max(0.0, next_t - time.monotonic())):
                await stop.wait()
        except TimeoutError:
            pass


@dataclass
class _Alone:
    server: subprocess.Popen[bytes]
    lesson_dir: Path
    base: str
    token: str
    segment: bytes


def _start_alone(work: Path) -> _Alone:
    """A real 2 s 720p segment (ffmpeg testsrc2, H.264 2.5 Mb/s), a lesson folder and a
    ``syncclass media-server`` process serving it."""
    config = load_config(CONFIG)
    segment = work / "one.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=15", "-t", "2", "-c:v", "libx264", "-b:v",
                    "2500k", "-g", "30", "-pix_fmt", "yuv420p", "-f", "mpegts", str(segment)],
                   check=True)
    lesson_id = "bench-hls-server-only"
    lesson_dir = work / "lessons" / lesson_id
    lesson_dir.mkdir(parents=True)
    (lesson_dir / "meta.json").write_text(json.dumps(
        {"lesson_id": lesson_id, "pairing_id": config.pairings[0].id}))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "syncclass", "media-server", "--config", str(CONFIG), "--port",
         str(port), "--live-dir", str(work / "lessons"), "--data-dir", str(work / "media")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return _Alone(server, lesson_dir, f"http://127.0.0.1:{port}/live/{lesson_id}/",
                  config.observers[0].token, segment.read_bytes())


async def server_only(viewers: int, phase_s: float, rounds: int, poll_s: float,
                      alone: _Alone) -> list[dict[str, Any]]:
    """The media server alone (no mixer, no agents): a feeder writes a segment every 2 s;
    N viewers as in the lesson run."""
    ps = psutil.Process(alone.server.pid)
    me = psutil.Process()
    stop_feed = asyncio.Event()
    feeder = asyncio.ensure_future(feed_segments(alone.lesson_dir, alone.segment, 2.0,
                                                 stop_feed))
    phases: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(3.0)
        for r in range(rounds):
            stop = asyncio.Event()
            listing = Listing()
            watcher = asyncio.ensure_future(
                watch_listing(alone.lesson_dir / "index.m3u8", listing, stop))
            results = [ViewerResult() for _ in range(viewers)]
            tasks = [asyncio.ensure_future(viewer(alone.base, alone.token, poll_s, stop, res))
                     for res in results]
            await asyncio.sleep(poll_s + 1.0)
            cpu0, me0, t0 = sum(ps.cpu_times()[:2]), sum(me.cpu_times()[:2]), time.monotonic()
            await asyncio.sleep(phase_s)
            elapsed = time.monotonic() - t0
            m: dict[str, Any] = {
                "round": r, "viewers": viewers, "load_avg_1m": round(os.getloadavg()[0], 2),
                "media_server_cpu_percent": round(
                    100 * (sum(ps.cpu_times()[:2]) - cpu0) / elapsed, 1),
                "load_generator_cpu_percent": round(
                    100 * (sum(me.cpu_times()[:2]) - me0) / elapsed, 1)}
            until = time.time()
            stop.set()
            await asyncio.gather(watcher, *tasks)
            m.update(judge(results, listing, until))
            print(json.dumps(m), flush=True)
            phases.append(m)
    finally:
        stop_feed.set()
        await feeder
    return phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", type=int, default=200)
    ap.add_argument("--phase", type=float, default=40.0, help="seconds per phase")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--poll", type=float, default=1.0, help="viewer playlist poll, seconds")
    ap.add_argument("--browser", type=float, default=30.0,
                    help="seconds of Chromium delay samples (0: skip)")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds before measuring")
    ap.add_argument("--server-only", action="store_true",
                    help="no lesson: the media server alone, fed a segment every 2 s")
    ap.add_argument("--out", default="benchmarks/results/hls_live.json")
    args = ap.parse_args()
    result: dict[str, Any] = {"viewers": args.viewers, "phase_s": args.phase,
                              "rounds": args.rounds, "poll_s": args.poll,
                              "cpus": os.cpu_count()}
    if args.server_only:
        with tempfile.TemporaryDirectory() as tmp:
            alone = _start_alone(Path(tmp))
            try:
                result["server_only"] = asyncio.run(server_only(
                    args.viewers, args.phase, args.rounds, args.poll, alone))
            finally:
                alone.server.terminate()
                alone.server.wait(10)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_result(args.out, result)
        return
    with tempfile.TemporaryDirectory() as tmp, live_lesson(Path(tmp), CONFIG) as live:
        time.sleep(args.settle)
        if args.browser:
            result["browser"] = browser_delay(live, args.browser, args.settle)
            print(json.dumps(result["browser"]), flush=True)
        if args.rounds:
            phases = asyncio.run(load_phases(live, args.viewers, args.phase, args.rounds,
                                             args.poll))
            result["phases"] = phases
            summary: dict[str, Any] = {}
            for n in (0, args.viewers):
                rows = [p for p in phases if p["viewers"] == n]
                summary[f"{n}_viewers"] = {
                    k: median(p[k] for p in rows) for k in rows[0]
                    if k not in ("round", "viewers")}
            result["median"] = summary
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, result)
    print(json.dumps(result.get("median", {}), indent=2))


if __name__ == "__main__":
    main()
