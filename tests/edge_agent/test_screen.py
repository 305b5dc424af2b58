"""The classroom screen under a real X server (Xvfb): full screen, the view scaled with
its aspect kept, the status strip; checked on a screenshot of the X display taken by
ffmpeg's x11grab (what a person in the room would see)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from edge_agent.screen import ScreenStatus, ScreenVideoSink
from syncclass.errors import DeviceError

W, H = 1280, 720


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed (scripts/bootstrap.sh installs xvfb)")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", f"{W}x{H}x24",
                                 "-nolisten", "tcp"], stdout=subprocess.PIPE, stderr=log)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()  # the display number, when ready
            if not line.isdigit():
                log.seek(0)
                pytest.fail(f"Xvfb did not start: {log.read().decode()[-500:]}")
            yield f":{line}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            proc.stdout.close() if proc.stdout else None


def screenshot(display: str, path: Path) -> np.ndarray:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "x11grab", "-video_size", f"{W}x{H}",
                    "-i", f"{display}+0,0", "-frames:v", "1", str(path)],
                   check=True, timeout=30)
    img = cv2.imread(str(path))
    assert img is not None and img.shape == (H, W, 3)
    return img


def test_fullscreen_view_and_status_strip(xvfb: str, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.setenv("SDL_VIDEODRIVER", "x11")
    status = {"s": ScreenStatus(connected=True, lesson="上课中 live · 数学", latency_ms=123.0,
                                hand_raised=True, mic_level_dbov=-12.0)}
    sink = ScreenVideoSink("三(1)班", fullscreen=True, status=lambda: status["s"])
    try:
        assert sink.size == (W, H)  # full screen on the X display
        # A 640x480 (4:3) view: red left half, blue right half.
        bgr = np.zeros((480, 640, 3), np.uint8)
        bgr[:, :320] = (0, 0, 255)
        bgr[:, 320:] = (255, 0, 0)
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
        for _ in range(3):
            sink.write(frame)
            time.sleep(0.05)
        shot = screenshot(xvfb, tmp_path / "screen.png")
        strip = sink.strip_height()
        area_h = H - strip
        # The view is scaled to the area above the strip, 4:3 kept: width area_h * 4/3.
        view_w = round(640 * area_h / 480) & ~1
        x0 = (W - view_w) // 2
        mid_y = area_h // 2
        b, g, r = (int(v) for v in shot[mid_y, x0 + view_w // 4])
        assert r > 200 and b < 60, (b, g, r)
        b, g, r = (int(v) for v in shot[mid_y, x0 + 3 * view_w // 4])
        assert b > 200 and r < 60, (b, g, r)
        assert shot[mid_y, : max(0, x0 - 4)].max() < 20  # black bars beside a 4:3 view
        # The strip: the dark background, a green "connected" dot, amber hand-raised text,
        # and a green mic level bar at the right.
        strip_px = shot[area_h + 2 :, :]
        assert np.median(strip_px) < 60
        dot = shot[area_h + strip // 2, strip // 3 + strip // 4]
        assert dot[1] > 120 and dot[2] < 80, dot
        amber = (strip_px[:, :, 2] > 200) & (strip_px[:, :, 1] > 150) & (strip_px[:, :, 0] < 60)
        assert amber.sum() > 50
        green = (strip_px[:, :, 1] > 120) & (strip_px[:, :, 2] < 80)
        assert green[:, W * 3 // 4 :].sum() > 100  # the meter
        text_px = (strip_px.min(axis=2) > 200).sum()
        assert text_px > 200  # white text rendered (CJK + English)

        # Disconnected, idle: red dot, waiting text, no view.
        status["s"] = ScreenStatus(connected=False, mic_muted=True)
        sink.refresh(idle=True)
        time.sleep(0.05)
        shot2 = screenshot(xvfb, tmp_path / "idle.png")
        dot = shot2[area_h + strip // 2, strip // 3 + strip // 4]
        assert dot[2] > 150 and dot[1] < 80, dot
        assert shot2[mid_y, x0 + view_w // 4, 2] < 100  # the red view half is gone
        assert (shot2[:area_h].min(axis=2) > 90).sum() > 200  # the grey waiting text
        assert sink.frames == 3 and not sink.quit_requested
    finally:
        sink.close()
    sink.close()


def test_screen_without_display_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "x11")
    monkeypatch.setenv("DISPLAY", ":987")
    with pytest.raises(DeviceError, match=r"no display|cannot open"):
        ScreenVideoSink("x")
