"""Driving Debian's headless Chromium (/usr/bin/chromium) from tests via Playwright.

Fake media devices feed a Y4M file whose frames carry our timecode and a WAV tone, so a
browser classroom's camera and microphone can be recognised after the mixer.
"""

from __future__ import annotations

import tempfile
import wave
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml
from playwright.sync_api import BrowserContext, Page, sync_playwright

from syncclass.timecode import Timecode, paint_timecode

ROOT = Path(__file__).resolve().parents[2]
"""The repository (its ``configs/county.yaml``)."""
CHROMIUM = Path("/usr/bin/chromium")
MAIN, AGENT_RURAL, BROWSER = "main-3-1", "shanping-3", "hetou-3"
"""The sample county's main classroom, a receiving classroom with an agent and one that
joins from the browser."""
BASE_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # WebRTC on loopback: offer 127.0.0.1 candidates, and not as mDNS names (aiortc
    # cannot resolve .local names).
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


def write_timecode_y4m(path: Path, source: int, width: int = 256, height: int = 144,
                       fps: int = 15, frames: int = 900, base_ms: int = 1_000_000) -> Path:
    """A Y4M clip: frame ``i`` carries ``Timecode(base_ms + i * 1000 / fps, source)`` over a
    grey gradient. Chromium's file camera plays it at ``fps`` and loops it, so the default
    60 s keep the timecode increasing for a whole test lesson (small: 55 kB a frame)."""
    grad = (np.arange(width, dtype=np.float32) / width * 120 + 60).astype(np.uint8)
    chroma = np.full((height // 2) * (width // 2), 128, np.uint8).tobytes()
    with path.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            y = np.tile(grad, (height, 1))
            y[height // 2 :, (i * 4) % width :][:, :8] = 235  # a moving bar
            paint_timecode(y, Timecode(capture_ms=base_ms + i * 1000 // fps, source=source))
            fh.write(b"FRAME\n" + y.tobytes() + chroma + chroma)
    return path


def write_tone_wav(path: Path, hz: float, seconds: float = 2.0, rate: int = 48000,
                   amplitude: float = 0.3) -> Path:
    """A mono 16-bit WAV of a sine at ``hz`` (whole periods, so it loops without a click)."""
    n = int(rate * seconds)
    cycles = round(hz * seconds)
    t = np.arange(n) / n
    samples = (np.sin(2 * np.pi * cycles * t) * amplitude * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


@contextmanager
def chromium(video: Path | None = None, audio: Path | None = None, *,
             executable: Path = CHROMIUM,
             extra_args: Sequence[str] = ()) -> Iterator[BrowserContext]:
    """A headless Chromium with fake camera/microphone (from ``video``/``audio`` if given)
    and an empty profile, closed on exit. ``executable`` may be a wrapper that starts
    /usr/bin/chromium elsewhere (e.g. in a network namespace)."""
    args = [*BASE_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            *extra_args]
    if video is not None:
        args.append(f"--use-file-for-fake-video-capture={video}")
    if audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={audio}")
    with tempfile.TemporaryDirectory(prefix="syncclass-chromium-") as profile, \
            sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(executable), headless=True, args=args,
        )
        try:
            yield context
        finally:
            context.close()


def browser_lesson_config(tmp: Path) -> tuple[Path, Path]:
    """The sample county with its mixer data in ``tmp``: (config path, data dir)."""
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data_dir = tmp / "mixer-data"
    data["mixer"]["data_dir"] = str(data_dir)
    path = tmp / "county.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path, data_dir


def wait_page(page: Page, expr: str, timeout_s: float, what: str) -> None:
    """Wait until ``expr`` is truthy in ``page``; on timeout fail with the page's log."""
    try:
        page.wait_for_function(expr, timeout=timeout_s * 1000, polling=200)
    except Exception as exc:
        logs = page.evaluate("() => document.getElementById('log')?.innerText")
        raise AssertionError(f"timed out waiting for {what}; page log:\n{logs}") from exc
