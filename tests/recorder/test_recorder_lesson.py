"""A 20 s lesson through ``syncclass demo`` (mixer, recorder, three agents as processes):
the printed lesson video is an H.264 + AAC MP4 of the lesson's length, in sync, showing
the composed layout, with metadata and a poster."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from syncclass.config import load_config
from syncclass.layout import Rect, speaker_layout
from syncclass.timecode import read_timecode, timecode_band_height

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LESSON_S = 20.0
BEEP_HZ = 3000.0
SYNC_PERIOD_S = 5.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, "-m", "syncclass", "demo", "--config",
         str(ROOT / "configs" / "county.yaml"), "--duration", str(LESSON_S), "--out", str(out)],
        capture_output=True, text=True, timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = re.search(r"lesson video: (\S+\.mp4)", proc.stdout)
    assert m, proc.stdout
    yield {"stdout": proc.stdout, "mp4": Path(m.group(1)), "out": out,
           "summary": json.loads((out / "demo-summary.json").read_text())}


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def test_demo_prints_a_playable_mp4(demo: dict[str, Any]) -> None:
    mp4 = demo["mp4"]
    assert mp4.exists()
    info = ffprobe(mp4)
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    assert codecs == {"video": "h264", "audio": "aac"}
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (1280, 720)
    head = mp4.read_bytes()[:65536]
    assert 0 <= head.find(b"moov") < head.find(b"mdat")  # faststart: index first
    meta = json.loads((mp4.parent / "metadata.json").read_text())
    lesson_s = meta["duration_s"]  # the mixer's lesson start to its end
    assert abs(lesson_s - LESSON_S) < 1.5, meta  # the demo's 20 s plus the HTTP round trips
    assert abs(float(info["format"]["duration"]) - lesson_s) <= 0.5, (info["format"], meta)
    assert meta["subject"] == "数学" and meta["teacher"] == "王老师"
    assert {c["id"] for c in meta["classrooms"]} == {"main-3-1", "hetou-3", "shanping-3"}
    assert meta["gaps"] == [] and meta["segments"]
    # Segments start at keyframes every 2 s: at most one composed frame later.
    fps = int(video["nb_frames"]) / float(video["duration"])
    assert float(np.median([s["duration_s"] for s in meta["segments"]])) <= 2.0 + 1.5 / fps
    import hashlib
    assert hashlib.sha256(mp4.read_bytes()).hexdigest() == \
        meta["checksums"]["sha256"]["lesson.mp4"]
    poster = mp4.parent / "poster.jpg"
    assert poster.read_bytes()[:2] == b"\xff\xd8"


def _tiles() -> list[tuple[str, Rect, int]]:
    config = load_config(ROOT / "configs" / "county.yaml")
    labels = {c.id: c.label for c in config.classrooms}
    tiles = speaker_layout(1280, 720, "main-3-1", ["hetou-3", "shanping-3"], labels)
    return [(t.classroom_id, t.rect, config.classroom_number(t.classroom_id)) for t in tiles]


def test_frames_show_the_composed_layout(demo: dict[str, Any]) -> None:
    tiles = _tiles()
    checked = 0
    with av.open(str(demo["mp4"])) as c:
        total = c.streams.video[0].frames
        picks = {total * k // 5 for k in range(1, 5)}  # four frames across the lesson
        for i, frame in enumerate(c.decode(video=0)):
            if i not in picks:
                continue
            y = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
            for cid, r, number in tiles:
                tc = read_timecode(y[r.y:r.y + r.h, r.x:r.x + r.w])
                assert tc is not None and tc.source == number, (i, cid, tc)
            checked += 1
    assert checked == 4


def _flash_onsets(path: Path) -> list[float]:
    """Times (s) of each flash in the recording, less the flash frame's capture phase.

    A synthetic camera's flash frame is captured up to one frame after the sync instant
    (its timecode says when): that phase belongs to the camera, not to the recording, so
    it is subtracted, as the beep starts exactly on the instant."""
    tiles = _tiles()
    onsets: list[float] = []
    prev = False
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            y = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
            phases = []
            for _, r, _ in tiles:
                band = timecode_band_height(r.h) + 4
                body = y[r.y + band:r.y + r.h - r.h // 6, r.x:r.x + r.w]
                if float((body >= 225).mean()) > 0.6:
                    tc = read_timecode(y[r.y:r.y + r.h, r.x:r.x + r.w])
                    if tc is not None:
                        capture_s = tc.capture_ms / 1000
                        phases.append(capture_s - round(capture_s / SYNC_PERIOD_S)
                                      * SYNC_PERIOD_S)
            flash = bool(phases)
            if flash and not prev and frame.time is not None:
                onsets.append(float(frame.time) - min(phases))
            prev = flash
    return onsets


def _beep_onsets(path: Path) -> list[float]:
    """Times (s) where the 3000 Hz beep starts in the audio (5 ms resolution)."""
    times, blocks = [], []
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            if frame.time is None:
                continue
            times.append(float(frame.time))
            blocks.append(frame.to_ndarray().reshape(-1).astype(np.float64))
    rate = 48000
    win = rate // 200
    t_list, e_list = [], []
    for t0, block in zip(times, blocks, strict=True):
        ref = np.exp(-2j * np.pi * BEEP_HZ * np.arange(win) / rate)
        for k in range(len(block) // win):
            seg = block[k * win:(k + 1) * win]
            e_list.append(abs(seg @ ref) / (np.sqrt(seg @ seg * win) + 1e-9))
            t_list.append(t0 + k * win / rate)
    e = np.array(e_list)
    on = e > 0.3  # one classroom beeping among three tones gives ~0.41, none ~0
    return [t_list[i] for i in range(1, len(on)) if on[i] and not on[i - 1]]


def test_audio_and_video_in_sync(demo: dict[str, Any]) -> None:
    flashes = _flash_onsets(demo["mp4"])
    beeps = _beep_onsets(demo["mp4"])
    assert len(flashes) >= 3, flashes  # every 5 s in a 20 s lesson
    offsets = []
    for f in flashes:
        near = [b for b in beeps if abs(b - f) < 0.5]
        assert near, (f, beeps)
        offsets.append(min(near) - f)
    assert abs(float(np.median(offsets))) <= 0.040, offsets
