"""Glass-to-glass latency: a direct aiortc peer-to-peer link vs the same classrooms
through the mixer, measured in the same run (alternating).

- ``p2p``: two processes on loopback, as two classroom PCs talking directly. The sender is
  built like an agent (the main classroom's :class:`~edge_agent.sources.SyntheticVideoSource`
  1280x720 at the county fps with its burned-in timecode, the agent's
  :class:`~syncclass.codec.H264Encoder` at the uplink bitrate via
  :class:`~edge_agent.agent.EncodedVideoTrack`, plus its synthetic tone over Opus); the
  receiver decodes (aiortc) and reads the timecode of every frame: latency = decode time -
  capture time (same wall clock). Both use the agents' process setup (uvloop, tuned GC,
  low-latency jitter buffers, ICE on 127.0.0.1). Signalling goes over the processes'
  stdin/stdout.
- ``mixer``: the sample county as real processes (mixer + main + receiving agents, as
  ``benchmarks/latency.py``); each receiving agent reads every source's timecode in its
  composed view. Figures: median over (receiver, source) pairs of each pair's p50/p95, and
  the same for the teacher seen by the receiving classrooms only (the path P2P replaces).

Both sides' figures cover every frame from the first one decoded to the end of the
window (``--settle`` + ``--seconds``); p2p also reports the window alone. Rounds alternate
p2p / mixer; medians over ``--rounds``. Targets (issue 7): through-mixer p50 <= 1.3 x P2P,
p50 <= 80 ms, p95 <= 120 ms.

    .venv/bin/python -m benchmarks.p2p_latency --seconds 20 --rounds 3 \\
        --out benchmarks/results/p2p_latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
from aiortc import MediaStreamTrack, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from edge_agent.agent import EncodedVideoTrack, SourceAudioTrack
from edge_agent.sources import SyntheticAudioSource, SyntheticVideoSource
from syncclass.cli import _tune_aiortc, _tune_gc
from syncclass.codec import H264Encoder
from syncclass.config import CountyConfig, load_config
from syncclass.demo import LocalDeployment
from syncclass.liveness import tighten_ice_consent
from syncclass.rtc import (
    close_peer,
    new_peer_connection,
    prefer_codec,
    route_keyframe_requests,
    use_host_addresses,
)
from syncclass.stats import percentile
from syncclass.switches import Switches
from syncclass.timecode import read_timecode

from ._common import county_config, measure_window, median_or_none, start_lesson
from .harness import RESULTS, environment, write_result

logger = logging.getLogger("p2p_latency")


# -- the two peers (child processes) ----------------------------------------------------------


async def _read_line() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise EOFError("signalling pipe closed")
    return line


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run_sender(config: CountyConfig, classroom_id: str) -> None:
    """An agent's sending half: offer, then send camera + mic until stdin closes."""
    room = config.classroom(classroom_id)
    cam = room.devices.camera
    source = SyntheticVideoSource(cam.width, cam.height, cam.fps, room.label,
                                  config.classroom_number(classroom_id))
    encoder = H264Encoder(cam.width, cam.height, cam.fps, config.media.uplink_bitrate_kbps,
                          config.media.keyframe_interval_s, config.media.keyframe_min_interval_s)
    audio = SyntheticAudioSource(room.devices.microphone.tone_hz or room.tone_hz)
    pc = new_peer_connection()
    try:
        vsender = pc.addTrack(EncodedVideoTrack(source, encoder))
        pc.addTrack(SourceAudioTrack(audio))
        for t in pc.getTransceivers():
            if t.kind == "video":
                prefer_codec(t, "video/H264")
        route_keyframe_requests(vsender, encoder.request_keyframe)
        await pc.setLocalDescription(await pc.createOffer())
        _say({"type": "offer", "sdp": pc.localDescription.sdp})
        answer = json.loads(await _read_line())
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        with contextlib.suppress(EOFError):
            await _read_line()  # the parent closes stdin (or says stop) when done
    finally:
        await close_peer(pc)
        source.close()
        audio.close()


async def run_receiver(source_number: int, total_s: float, window_s: float) -> None:
    """Answer the offer, decode, read timecodes for ``total_s`` after the first frame;
    print the result as one JSON line."""
    samples: list[tuple[float, float]] = []  # (monotonic s, latency ms)
    frames = 0
    unreadable = 0
    first = asyncio.get_running_loop().create_future()
    pc = new_peer_connection()
    tasks: list[asyncio.Task[None]] = []

    async def read_video(track: MediaStreamTrack) -> None:
        nonlocal frames, unreadable
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                shown_ms = time.time() * 1000.0
                assert isinstance(frame, av.VideoFrame)
                frames += 1
                plane = frame.planes[0]
                y = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height,
                                                                      plane.line_size)
                tc = read_timecode(y[:, : frame.width])
                if tc is None or tc.source != source_number:
                    unreadable += 1
                    continue
                samples.append((time.monotonic(), shown_ms - tc.capture_ms))
                if not first.done():
                    first.set_result(None)

    async def drain(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.ensure_future(
            read_video(track) if track.kind == "video" else drain(track)))

    try:
        offer = json.loads(await _read_line())
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        _say({"type": "answer", "sdp": pc.localDescription.sdp})
        await asyncio.wait_for(first, 60.0)
        t_first = time.monotonic()
        await asyncio.sleep(total_s)
        t_end = time.monotonic()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close_peer(pc)
    all_ms = [lat for t, lat in samples if t <= t_end]
    window_ms = [lat for t, lat in samples if t_end - window_s <= t <= t_end]
    _say({"type": "result", "frames_decoded": frames, "unreadable": unreadable,
          "fps": round(len(all_ms) / max(1e-9, t_end - t_first), 2),
          "all": _pcts(all_ms), "window": _pcts(window_ms)})


def _pcts(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50_ms": None, "p95_ms": None}
    data = np.asarray(values)
    return {"count": len(values), "p50_ms": round(percentile(data, 50), 1),
            "p95_ms": round(percentile(data, 95), 1),
            "max_ms": round(float(data.max()), 1)}


def peer_main(args: argparse.Namespace) -> int:
    """Entry of a child process: set up like ``syncclass agent`` and run one peer."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = load_config(args.config)
    use_host_addresses(config.mixer.ice_host_addresses)
    tighten_ice_consent(config.mixer.ice_consent_interval_s, config.mixer.ice_consent_failures)
    switches = Switches.from_environ()
    _tune_aiortc(config, switches)
    _tune_gc(switches)
    pairing = config.pairings[0]
    if args.peer == "sender":
        coro = run_sender(config, pairing.main)
    else:
        coro = run_receiver(config.classroom_number(pairing.main), args.settle + args.seconds,
                            args.seconds)
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
    return 0


# -- the parent --------------------------------------------------------------------------------


def p2p_round(args: argparse.Namespace) -> dict[str, Any]:
    """One P2P link: spawn receiver and sender, relay offer/answer, wait for the result."""
    base = [sys.executable, "-m", "benchmarks.p2p_latency", "--config", str(args.config),
            "--seconds", str(args.seconds), "--settle", str(args.settle)]
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for role in ("receiver", "sender"):
            procs[role] = subprocess.Popen([*base, "--peer", role], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True)
        rx, tx = procs["receiver"], procs["sender"]
        assert rx.stdin and rx.stdout and tx.stdin and tx.stdout
        ps = {r: psutil.Process(p.pid) for r, p in procs.items()}
        offer = tx.stdout.readline()
        rx.stdin.write(offer)
        rx.stdin.flush()
        answer = rx.stdout.readline()
        tx.stdin.write(answer)
        tx.stdin.flush()
        t0 = time.monotonic()
        cpu0 = {r: sum(p.cpu_times()[:2]) for r, p in ps.items()}
        line = rx.stdout.readline()
        cpu1 = {r: sum(p.cpu_times()[:2]) for r, p in ps.items()}
        elapsed = time.monotonic() - t0
        if not line:
            raise RuntimeError("the P2P receiver exited without a result")
        result = dict(json.loads(line))
        result["cpu_percent_of_one_core"] = {
            r: round(100.0 * (cpu1[r] - cpu0[r]) / elapsed, 1) for r in ps}
        return result
    finally:
        for p in procs.values():
            if p.stdin:
                with contextlib.suppress(OSError):
                    p.stdin.close()
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def mixer_round(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The sample county through the mixer; latency from the agents' summaries."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with LocalDeployment(args.config, work, log_level="warning") as dep:
        pairing = dep.config.pairings[0]
        members = [pairing.main, *pairing.receiving]
        start_lesson(dep, members, recorder=args.record)
        time.sleep(args.settle)
        window = measure_window(dep, members, args.seconds)
        split = mixer_split(dep, pairing.main)
        dep.agent_command(pairing.main, "end")
    teacher = [p for p in window["latency_pairs"] if p["source"] == pairing.main]
    return {
        "split": split,
        "all_pairs_p50_ms_median": window["latency_p50_ms_median"],
        "all_pairs_p95_ms_median": window["latency_p95_ms_median"],
        "teacher_to_rural_p50_ms_median": median_or_none([p["p50_ms"] for p in teacher]),
        "teacher_to_rural_p95_ms_median": median_or_none([p["p95_ms"] for p in teacher]),
        "cpu_percent_of_one_core": window["cpu_percent_of_one_core"],
        "views": window["views"],
        "latency_pairs": window["latency_pairs"],
    }


def mixer_split(dep: LocalDeployment, main: str, samples: int = 10) -> dict[str, Any]:
    """Where the teacher's picture is when the mixer composes it, from the mixer's
    ``/api/stats``, ``samples`` times 0.5 s apart (medians): its age since capture at the
    composition instant (the lip-sync estimate: capture time from the teacher's RTCP
    sender reports, smoothed), how long the composition tick waited for the teacher's
    frames (:class:`~mixer.tickphase.TickPhase`), and each view's mean encode time. The rest
    of the glass-to-glass time is composition, encode, the second hop and the classroom's
    jitter buffer and decode."""
    ages, waits = [], []
    encode: dict[str, list[float]] = {}
    for _ in range(samples):
        media = next(iter(dep.mixer_stats()["media"].values()), {})
        sync = ((media.get("audio_inputs") or {}).get(main) or {}).get("lipsync") or {}
        if sync.get("video_age_ms") is not None:
            ages.append(float(sync["video_age_ms"]))
        wait = (media.get("tick_phase") or {}).get("teacher_wait_ms")
        if wait is not None:
            waits.append(float(wait))
        for name, view in (media.get("views") or {}).items():
            ms = (view.get("encoder") or {}).get("mean_encode_ms")
            if ms is not None:
                encode.setdefault(name, []).append(float(ms))
        time.sleep(0.5)
    return {
        "teacher_age_at_composition_ms": median_or_none(ages),
        "tick_wait_for_teacher_ms": median_or_none(waits),
        "mean_encode_ms": {name: median_or_none(v) for name, v in encode.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rural", type=int, default=2,
                    help="receiving classrooms in the mixer rounds (default 2, as the sample "
                         "county)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window, s")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="time from first frame / lesson start to the window, s")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", action="store_true",
                    help="run a recorder beside the mixer in the mixer rounds")
    ap.add_argument("--work", type=Path, default=Path("/tmp/syncclass-bench-p2p"))
    ap.add_argument("--out", type=Path, default=RESULTS / "p2p_latency.json")
    ap.add_argument("--peer", choices=["sender", "receiver"], help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        return peer_main(args)
    if args.rounds < 1 or args.seconds <= 0 or args.rural < 1:
        ap.error("--rounds and --rural must be >= 1 and --seconds > 0")
    args.config = county_config(args.work / "county", args.rural)
    env_start = environment()
    p2p: list[dict[str, Any]] = []
    mixer: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for side in (("p2p", "mixer") if r % 2 == 0 else ("mixer", "p2p")):
            load = environment()["load_avg"][0]
            if side == "p2p":
                p2p.append(p2p_round(args) | {"load_1min_at_start": load})
                res = p2p[-1]
                print(f"round {r + 1} p2p: p50 {res['all']['p50_ms']} p95 "
                      f"{res['all']['p95_ms']} ms ({res['fps']} fps, load {load})", flush=True)
            else:
                mixer.append(mixer_round(args, args.work / f"mixer-{r}")
                             | {"load_1min_at_start": load})
                res = mixer[-1]
                print(f"round {r + 1} mixer: all pairs p50 {res['all_pairs_p50_ms_median']} "
                      f"p95 {res['all_pairs_p95_ms_median']}, teacher→rural p50 "
                      f"{res['teacher_to_rural_p50_ms_median']} p95 "
                      f"{res['teacher_to_rural_p95_ms_median']} ms (load {load}); the "
                      f"teacher's picture at composition: {res['split']}", flush=True)

    def med(values: list[float | None]) -> float | None:
        return median_or_none([v for v in values if v is not None])

    summary = {
        "p2p_p50_ms": med([x["all"]["p50_ms"] for x in p2p]),
        "p2p_p95_ms": med([x["all"]["p95_ms"] for x in p2p]),
        "p2p_window_p50_ms": med([x["window"]["p50_ms"] for x in p2p]),
        "p2p_window_p95_ms": med([x["window"]["p95_ms"] for x in p2p]),
        "mixer_p50_ms": med([x["all_pairs_p50_ms_median"] for x in mixer]),
        "mixer_p95_ms": med([x["all_pairs_p95_ms_median"] for x in mixer]),
        "mixer_teacher_to_rural_p50_ms": med([x["teacher_to_rural_p50_ms_median"]
                                              for x in mixer]),
        "mixer_teacher_to_rural_p95_ms": med([x["teacher_to_rural_p95_ms_median"]
                                              for x in mixer]),
        "mixer_teacher_age_at_composition_ms": med(
            [x["split"]["teacher_age_at_composition_ms"] for x in mixer]),
    }
    if summary["p2p_p50_ms"] and summary["mixer_p50_ms"] is not None:
        summary["ratio_mixer_over_p2p_p50"] = round(summary["mixer_p50_ms"]
                                                    / summary["p2p_p50_ms"], 2)
    if summary["p2p_p95_ms"] and summary["mixer_p95_ms"] is not None:
        summary["ratio_mixer_over_p2p_p95"] = round(summary["mixer_p95_ms"]
                                                    / summary["p2p_p95_ms"], 2)
    result = {
        "benchmark": "p2p_latency",
        "environment_start": env_start,
        "environment_end": environment(),
        "args": {"seconds": args.seconds, "settle": args.settle, "rounds": args.rounds,
                 "record": args.record, "rural": args.rural},
        "targets": {"ratio_mixer_over_p2p_p50": 1.3, "mixer_p50_ms": 80, "mixer_p95_ms": 120},
        "summary": summary,
        "p2p_rounds": p2p,
        "mixer_rounds": mixer,
    }
    write_result(args.out, result)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
