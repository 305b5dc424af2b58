"""The page's timecode reader (mixer/static/timecode.js) against syncclass.timecode, in
Chromium: the same pictures must give the same answer (value or "unreadable")."""

from __future__ import annotations

import base64
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from syncclass.timecode import COLUMNS, Timecode, paint_timecode, read_timecode
from tests.browser_support import CHROMIUM, chromium

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")

STATIC = Path(__file__).resolve().parents[2] / "mixer" / "static"


@pytest.fixture(scope="module")
def static_url() -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(STATIC))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _case(plane: np.ndarray, x0: int, y0: int, w: int, h: int) -> dict[str, Any]:
    """Only the rows the reader samples are shipped to the page (band + margin)."""
    rows = min(plane.shape[0], y0 + int(np.ceil(h / 8)) + 2)
    expected = read_timecode(plane[y0 : y0 + h, x0 : x0 + w])
    return {
        "data": base64.b64encode(np.ascontiguousarray(plane[:rows]).tobytes()).decode(),
        "stride": plane.shape[1], "x0": x0, "y0": y0, "w": w, "h": h,
        "expected": None if expected is None
        else {"captureMs": expected.capture_ms, "source": expected.source},
    }


def make_cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    cases = []
    for i in range(60):
        tc = Timecode(capture_ms=int(rng.integers(0, 1 << 48)), source=int(rng.integers(256)))
        frame = rng.integers(30, 200, (720, 1280), dtype=np.uint8)
        paint_timecode(frame, tc)
        kind = i % 6
        if kind == 0:  # the painted picture itself
            cases.append(_case(frame, 0, 0, 1280, 720))
            continue
        # A 320x180 tile of a composite, blurred and noisy like a decoded H.264 picture.
        tile = cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA)
        tile = cv2.GaussianBlur(tile, (3, 3), 0.8)
        noise = rng.normal(0, 4 if kind != 5 else 30, tile.shape)
        tile = np.clip(tile + noise, 0, 255).astype(np.uint8)
        if kind == 2:  # low contrast: unreadable
            tile = (tile.astype(np.float32) * 0.3 + 90).astype(np.uint8)
        if kind == 3:  # one payload cell inverted: CRC fails
            col = 1 + int(rng.integers(COLUMNS - 2))
            x = slice(int(col * 320 / COLUMNS) + 1, int((col + 1) * 320 / COLUMNS) - 1)
            tile[0:11, x] = 255 - tile[0:11, x]
        composite = np.full((720, 1280), 16, np.uint8)
        composite[0:180, 960:1280] = tile
        dx, dy = (int(v) for v in rng.integers(-2, 3, 2))
        cases.append(_case(composite, 960 + max(dx, -2), max(0, dy), 320 - abs(dx), 180))
    # No timecode at all.
    cases.append(_case(rng.integers(0, 256, (180, 320), dtype=np.uint8), 0, 0, 320, 180))
    cases.append(_case(np.full((90, 160), 128, np.uint8), 0, 0, 160, 90))
    cases.append(_case(np.zeros((20, 40), np.uint8), 0, 0, 40, 20))  # too small
    return cases


READ_ALL = """async (cases) => {
  const { readTimecode } = await import('/timecode.js');
  return cases.map((c) => {
    const bin = atob(c.data);
    const luma = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) luma[i] = bin.charCodeAt(i);
    return readTimecode(luma, c.stride, c.x0, c.y0, c.w, c.h);
  });
}"""


def test_js_reader_matches_python(static_url: str) -> None:
    cases = make_cases(np.random.default_rng(20240601))
    readable = sum(c["expected"] is not None for c in cases)
    unreadable = len(cases) - readable
    assert readable >= 30 and unreadable >= 15, (readable, unreadable)  # both paths exercised
    with chromium() as browser:
        page = browser.new_page()
        page.goto(static_url + "/")
        got = page.evaluate(READ_ALL, [{k: v for k, v in c.items() if k != "expected"}
                                       for c in cases])
    mismatches = [(i, c["expected"], g) for i, (c, g) in enumerate(zip(cases, got, strict=True))
                  if c["expected"] != g]
    assert not mismatches, mismatches[:5]


def test_js_luma_of_canvas_pixels(static_url: str) -> None:
    """A grey picture drawn on a canvas reads back at its video-range luma (what H.264
    carried), so cell levels and contrast match the Python reader's expectations."""
    with chromium() as browser:
        page = browser.new_page()
        page.goto(static_url + "/")
        got = page.evaluate("""async () => {
          const { lumaOfRgba } = await import('/timecode.js');
          const grey = (v) => lumaOfRgba(new Uint8ClampedArray([v, v, v, 255]))[0];
          return [grey(0), grey(255), grey(128)];
        }""")
    assert got == [16, 235, 126]
