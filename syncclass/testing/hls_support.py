"""A live lesson served by ``syncclass media-server``, and reading the composed timecode of
the picture a Chromium page shows (tests and benchmarks/hls_live.py).

The lesson: the sample county's mixer, recorder, its three classrooms' agents (synthetic
cameras paint the capture time, wall clock) and a media server, as real processes.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from playwright.sync_api import Page

from syncclass.config import CountyConfig
from syncclass.demo import LocalDeployment
from syncclass.layout import Rect, speaker_layout
from syncclass.timecode import Timecode, read_timecode

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "county.yaml"

GRAB_JS = """([x, y, w, h]) => {
  // The picture the video element shows now: luma of the rectangle, base64, and when.
  const v = document.getElementById("video");
  if (!v || v.readyState < 2 || !v.videoWidth) return null;
  const c = window.__grab || (window.__grab = document.createElement("canvas"));
  c.width = w; c.height = h;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(v, x, y, w, h, 0, 0, w, h);
  const now = Date.now();
  const d = ctx.getImageData(0, 0, w, h).data;
  const n = w * h, luma = new Uint8Array(n);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    luma[i] = (77 * d[j] + 150 * d[j + 1] + 29 * d[j + 2]) >> 8;
  }
  let s = "";
  for (let i = 0; i < n; i += 0x8000) {
    s += String.fromCharCode.apply(null, luma.subarray(i, i + 0x8000));
  }
  return { now, t: v.currentTime, vw: v.videoWidth, vh: v.videoHeight, y: btoa(s) };
}"""


@dataclass
class Shown:
    """One picture a page showed: its timecode (if readable) and when (epoch ms)."""

    shown_ms: int
    current_time_s: float
    timecode: Timecode | None

    @property
    def delay_ms(self) -> int | None:
        return None if self.timecode is None else self.shown_ms - self.timecode.capture_ms


def teacher_rect(config: CountyConfig) -> Rect:
    """Where the main classroom's picture is in the recorded students view (1280x720)."""
    pairing = config.pairings[0]
    labels = {c.id: c.label for c in config.classrooms}
    tiles = speaker_layout(1280, 720, pairing.main, pairing.receiving, labels)
    return next(t.rect for t in tiles if t.classroom_id == pairing.main)


def grab(page: Page, rect: Rect) -> Shown | None:
    """The teacher's timecode in the picture ``page``'s video shows now."""
    got: dict[str, Any] | None = page.evaluate(GRAB_JS, [rect.x, rect.y, rect.w, rect.h])
    if got is None:
        return None
    luma = np.frombuffer(base64.b64decode(got["y"]), np.uint8).reshape(rect.h, rect.w)
    return Shown(int(got["now"]), float(got["t"]), read_timecode(luma))


@dataclass
class LiveLesson:
    dep: LocalDeployment
    lesson_id: str
    media_url: str
    recorder_dir: Path

    @property
    def config(self) -> CountyConfig:
        return self.dep.config

    def lesson_dir(self) -> Path:
        return self.recorder_dir / "lessons" / self.lesson_id

    def segments(self) -> int:
        try:
            return (self.lesson_dir() / "index.m3u8").read_text().count("#EXTINF")
        except OSError:
            return 0

    def end(self) -> None:
        status, body = self.dep.agent_command(self.config.pairings[0].main, "end")
        assert status == 200, body


@contextmanager
def live_lesson(work_dir: Path, config_path: Path = CONFIG, min_segments: int = 2
                ) -> Iterator[LiveLesson]:
    """A lesson started and recorded, with ``min_segments`` segments already listed."""
    with LocalDeployment(config_path, work_dir) as dep:
        pairing = dep.config.pairings[0]
        members = [pairing.main, *pairing.receiving]
        recorder_dir = work_dir / "recorder"
        dep.start_mixer()
        dep.start_recorder(recorder_dir)
        for cid in members:
            dep.start_agent(cid)
        dep.wait_for(lambda: set(members) <= set(dep.mixer_status()["classrooms"]), 60,
                     "all classrooms connected")
        _, url = dep.start_media_server(recorder_dir)
        status, lesson = dep.agent_command(pairing.main, "start")
        assert status == 200, lesson
        live = LiveLesson(dep, lesson["lesson_id"], url, recorder_dir)
        dep.wait_for(lambda: live.segments() >= min_segments, 30,
                     f"{min_segments} recorded segments")
        yield live
