"""What recording costs: the mixer's extra CPU and the recorder's CPU per hour of lesson,
side by side with re-encoding the same composite with ffmpeg (what a recorder that
decodes the classrooms' picture and encodes its own copy would spend).

The composite is the mixer's own: three synthetic classrooms composed by
:class:`mixer.compose.Compositor` in the sample county's ``students_view`` layout at
1280x720, 15 fps, encoded once by :class:`syncclass.codec.H264Encoder` at 2500 kbit/s (as
the mixer does for the classrooms anyway), plus the 48 kHz full mix. Then, in rounds:

- ``baseline``: this process replays those packets and audio frames at real-time pace
  (x ``--speed``) to nobody: the cost of the loop itself.
- ``publish``: the same, with :class:`mixer.publisher.RecordingPublisher` attached and a
  real ``syncclass recorder`` process subscribed. Mixer extra CPU = this process's CPU
  minus ``baseline``'s. Recorder CPU = the recorder process's CPU while receiving and
  writing segments, and separately while finalising (MP4 remux, poster, metadata, archive).
- ``ffmpeg``: ``ffmpeg`` decodes the same H.264 and re-encodes it with libx264 (preset
  ``veryfast``, and ``ultrafast`` as the mixer's own setting) plus AAC: its CPU time.

All CPU figures are seconds of CPU per second of lesson, shown as % of one core and as CPU
seconds per hour of lesson. Medians over ``--rounds``.

    .venv/bin/python -m benchmarks.recording --seconds 30 --rounds 3 \
        --out benchmarks/results/recording.json
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import psutil

from edge_agent.sources import SyntheticAudioSource, SyntheticVideoSource
from mixer.compose import Compositor, ScaleCache, SourceFrame
from mixer.media import LessonMedia
from mixer.publisher import RecordingPublisher
from syncclass.codec import H264Encoder
from syncclass.config import default_config_path, load_config
from syncclass.demo import free_port
from syncclass.layout import speaker_layout
from syncclass.lesson import Lesson
from syncclass.stats import median

from .harness import write_result

W, H, FPS, KBPS = 1280, 720, 15.0, 2500


@dataclass
class Media:
    video: list[av.Packet]
    audio: list[av.AudioFrame]
    seconds: float
    h264: Path


def make_media(seconds: float, work: Path) -> Media:
    """The composite's H.264 packets and the full mix's 20 ms frames (not measured)."""
    config = load_config(default_config_path())
    labels = {c.id: c.label for c in config.classrooms}
    rooms = ["main-3-1", "hetou-3", "shanping-3"]
    tiles = speaker_layout(W, H, rooms[0], rooms[1:], labels)
    comp = Compositor(W, H, tiles, 1.5)
    sources = [SyntheticVideoSource(W, H, FPS, labels[r], i) for i, r in enumerate(rooms)]
    enc = H264Encoder(W, H, FPS, KBPS, 2.0, 0.5, threads=1)
    t0 = time.time()
    packets: list[av.Packet] = []
    h264 = work / "composite.h264"
    with h264.open("wb") as fh:
        for i in range(int(seconds * FPS)):
            cap = t0 + i / FPS
            frames = {r: SourceFrame(s.produce(cap), time.monotonic())
                      for r, s in zip(rooms, sources, strict=True)}
            frame = comp.compose(frames, ScaleCache())
            frame.pts = round(i * 90000 / FPS)
            for p in enc.encode(frame):
                packets.append(p)
                fh.write(bytes(p))
    tones = [SyntheticAudioSource(f) for f in (440.0, 660.0, 1000.0)]
    audio = []
    for k in range(int(seconds * 50)):
        mix = sum(t.samples(k * 960).astype(np.int32) for t in tones) // 3
        frame = av.AudioFrame.from_ndarray(mix.astype(np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = 48000
        frame.pts = k * 960
        frame.time_base = fractions.Fraction(1, 48000)
        audio.append(frame)
    return Media(packets, audio, seconds, h264)


@dataclass
class FakeMedia:
    """What the publisher needs of a LessonMedia."""

    lesson: Lesson
    media: Any
    views: dict[str, Any]
    t0_epoch_ms: float = field(default_factory=lambda: time.time() * 1000)
    packet_listeners: dict[str, list[Any]] = field(default_factory=dict)
    full_mix_listeners: list[Any] = field(default_factory=list)

    def request_keyframe(self, view: str) -> None:
        pass


async def replay(media: Media, speed: float, fake: FakeMedia | None) -> float:
    """Feed packets and audio at real-time pace x ``speed``; returns this process's CPU s."""
    loop = asyncio.get_running_loop()
    events: list[tuple[float, int, Any]] = [(p.pts / 90000, 0, p) for p in media.video]
    events += [(f.pts / 48000, 1, f) for f in media.audio]
    events.sort(key=lambda e: (e[0], e[1]))
    cpu0 = time.process_time()
    start = loop.time()
    for t, kind, item in events:
        due = start + t / speed
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
        if fake is None:
            continue
        if kind == 0:
            for cb in fake.packet_listeners["students_view"]:
                cb(item)
        else:
            for cb in fake.full_mix_listeners:
                cb(item)
    return time.process_time() - cpu0


def start_recorder(work: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = work / f"rec-{time.monotonic_ns()}"
    rec = subprocess.Popen(
        [sys.executable, "-m", "syncclass", "--log-level", "warning", "recorder",
         "--recorder-endpoint", endpoint, "--out", str(out / "lessons"),
         "--archive-dir", str(out / "archive"), "--spool-dir", str(out / "spool")],
        stdin=subprocess.DEVNULL)
    return rec, endpoint, out


async def publish_round(media: Media, speed: float, rec: subprocess.Popen[bytes],
                        endpoint: str, out: Path) -> dict[str, float]:
    config = load_config(default_config_path())
    rc = config.recorder.model_copy(update={"endpoint": endpoint})
    config = config.model_copy(update={"recorder": rc})
    ps = psutil.Process(rec.pid)
    events: list[Any] = []
    pub = RecordingPublisher(config, lambda name, lid, cid, **d: events.append((name, d)))
    pub.start()
    try:
        for _ in range(300):
            if pub.stats()["recorders_connected"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the recorder did not connect")
        lesson = Lesson(f"bench-{time.monotonic_ns()}", "shiyan-rural-math", "main-3-1",
                        ["hetou-3", "shanping-3"], "数学", "三年级", "王老师", None, "live",
                        int(time.time() * 1000))
        fake = FakeMedia(lesson, config.media.model_copy(update={"fps": FPS}),
                         {"students_view": None},
                         packet_listeners={"students_view": []})
        rec_cpu0 = sum(ps.cpu_times()[:2])
        pub.attach(cast(LessonMedia, fake))
        cpu = await replay(media, speed, fake)
        for _ in range(200):  # let the publisher thread drain
            if not pub.stats()["queued"]:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        rec_cpu1 = sum(ps.cpu_times()[:2])
        pub.detach(cast(LessonMedia, fake))
        for _ in range(1200):
            if any(e[0] == "recording_ready" for e in events):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the recorder did not finish the lesson")
        rec_cpu2 = sum(ps.cpu_times()[:2])
        stats = pub.stats()
    finally:
        await pub.aclose()
    return {"publisher_cpu_s": cpu, "recorder_live_cpu_s": rec_cpu1 - rec_cpu0,
            "recorder_finalise_cpu_s": rec_cpu2 - rec_cpu1,
            "dropped": stats["dropped_hwm"] + stats["dropped_queue"]}


def ffmpeg_reencode(media: Media, preset: str, work: Path) -> float:
    """CPU seconds ffmpeg needs to decode the composite and re-encode it (video + audio)."""
    wav = work / "mix.wav"
    if not wav.exists():
        with av.open(str(wav), "w") as out:
            stream = out.add_stream("pcm_s16le", rate=48000, layout="mono")
            for f in media.audio:
                for p in stream.encode(f):
                    out.mux(p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-r", str(FPS), "-f", "h264", "-i", str(media.h264),
         "-i", str(wav), "-c:v", "libx264", "-preset", preset, "-b:v", f"{KBPS}k",
         "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart", str(work / "re.mp4")],
        check=True, stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="lesson media length")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--speed", type=float, default=1.0,
                    help="replay speed (1 = real time, as in a lesson)")
    ap.add_argument("--out", default="benchmarks/results/recording.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        work = Path(tmp)
        print(f"making {args.seconds:g} s of 720p15 composite + mix ...", flush=True)
        media = make_media(args.seconds, work)
        rows: dict[str, list[float]] = {}

        def add(key: str, value: float) -> None:
            rows.setdefault(key, []).append(value)

        for r in range(args.rounds):
            base = asyncio.run(replay(media, args.speed, None))
            rec, endpoint, out = start_recorder(work)
            try:
                res = asyncio.run(publish_round(media, args.speed, rec, endpoint, out))
            finally:
                rec.terminate()
                rec.wait(20)
            add("mixer_extra_cpu_s", res["publisher_cpu_s"] - base)
            add("recorder_live_cpu_s", res["recorder_live_cpu_s"])
            add("recorder_finalise_cpu_s", res["recorder_finalise_cpu_s"])
            add("dropped", res["dropped"])
            for preset in ("veryfast", "ultrafast"):
                add(f"ffmpeg_reencode_{preset}_cpu_s", ffmpeg_reencode(media, preset, work))
            print(f"round {r + 1}: " + ", ".join(f"{k}={v[-1]:.2f}" for k, v in rows.items()),
                  flush=True)
    sec = args.seconds
    med = {k: median(v) for k, v in rows.items()}

    def pct(cpu_s: float) -> float:
        return round(100.0 * cpu_s / sec, 2)

    def per_hour(cpu_s: float) -> float:
        return round(cpu_s / sec * 3600, 1)

    result = {
        "benchmark": "recording",
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "media": {"seconds": sec, "width": W, "height": H, "fps": FPS, "kbps": KBPS},
        "rounds": args.rounds,
        "speed": args.speed,
        "raw": rows,
        "percent_of_one_core": {
            "mixer_extra_for_recording": pct(med["mixer_extra_cpu_s"]),
            "recorder_live": pct(med["recorder_live_cpu_s"]),
            "ffmpeg_reencode_veryfast": pct(med["ffmpeg_reencode_veryfast_cpu_s"]),
            "ffmpeg_reencode_ultrafast": pct(med["ffmpeg_reencode_ultrafast_cpu_s"]),
        },
        "cpu_s_per_lesson_hour": {
            "mixer_extra_for_recording": per_hour(med["mixer_extra_cpu_s"]),
            "recorder_live": per_hour(med["recorder_live_cpu_s"]),
            "recorder_finalise": per_hour(med["recorder_finalise_cpu_s"]),
            "recorder_total": per_hour(med["recorder_live_cpu_s"]
                                       + med["recorder_finalise_cpu_s"]),
            "ffmpeg_reencode_veryfast": per_hour(med["ffmpeg_reencode_veryfast_cpu_s"]),
            "ffmpeg_reencode_ultrafast": per_hour(med["ffmpeg_reencode_ultrafast_cpu_s"]),
        },
        "dropped_messages_median": med["dropped"],
        "goal": "recording adds < 5% of one core at 720p15 (mixer_extra_for_recording)",
    }
    out = Path(args.out)
    write_result(out, result)
    print(json.dumps({k: result[k] for k in ("percent_of_one_core", "cpu_s_per_lesson_hour")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
