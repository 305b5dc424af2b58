"""Timecode painting and reading, through scaling, H.264 and misaligned crops."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from syncclass.timecode import (
    BLACK,
    TIMECODE_BAND,
    WHITE,
    Timecode,
    crc8,
    paint_timecode,
    read_timecode,
    timecode_band_height,
)

NOW_MS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z


def textured_picture(width: int, height: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """A busy luma picture (gradient + noise) so the band sits next to real content."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 6 * np.pi, width)[None, :]
    yy = np.linspace(0, 1, height)[:, None]
    base = 120 + 60 * np.sin(x) * np.cos(3 * yy) + rng.normal(0, 20, (height, width))
    return np.clip(base, 16, 235).astype(np.uint8)


def crop(
    y: npt.NDArray[np.uint8], box: tuple[int, int, int, int], edges: tuple[int, ...]
) -> npt.NDArray[np.uint8]:
    """Crop ``box`` (x, y, w, h) of ``y`` with each edge moved by ``edges`` (l, t, r, b) px."""
    x, top, w, h = box
    left, up, right, down = edges
    return y[top + up : top + h + down, x + left : x + w + right]


EDGE_SHIFTS = list(itertools.product((-2, 0, 2), repeat=4))


def test_payload_round_trip_and_crc() -> None:
    tc = Timecode(capture_ms=NOW_MS, source=42)
    data = bytes(tc)
    assert len(data) == 8
    assert Timecode.parse(data) == tc
    assert crc8(b"123456789") == 0xA1  # CRC-8/ITU check value
    assert crc8(bytes(7)) != 0  # an all-black band never validates
    with pytest.raises(ValueError, match="CRC"):
        Timecode.parse(data[:7] + bytes((data[7] ^ 1,)))
    with pytest.raises(ValueError, match="48 bits"):
        Timecode(capture_ms=1 << 48, source=0)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        Timecode(capture_ms=0, source=256)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (160, 90), (640, 480), (1920, 1080)])
def test_round_trip_full_size(width: int, height: int) -> None:
    y = textured_picture(width, height)
    below = y[timecode_band_height(height) :].copy()
    tc = Timecode(capture_ms=NOW_MS, source=7)
    paint_timecode(y, tc)
    assert read_timecode(y) == tc
    # Only the band is painted, in video-range levels.
    assert np.array_equal(y[timecode_band_height(height) :], below)
    assert set(np.unique(y[: round(height * TIMECODE_BAND)])) == {BLACK, WHITE}


def test_rejects_too_small_or_wrong_plane() -> None:
    with pytest.raises(ValueError, match="smaller"):
        paint_timecode(np.zeros((89, 160), np.uint8), Timecode(0, 0))
    with pytest.raises(ValueError, match="uint8"):
        paint_timecode(np.zeros((90, 160), np.float32), Timecode(0, 0))


def test_quarter_width_with_misaligned_crops() -> None:
    y = textured_picture(1280, 720)
    tc = Timecode(capture_ms=NOW_MS, source=200)
    paint_timecode(y, tc)
    tile = cv2.resize(y, (320, 180), interpolation=cv2.INTER_AREA)
    canvas = np.full((720, 1280), 16, np.uint8)
    canvas[300:480, 500:820] = tile
    for edges in EDGE_SHIFTS:
        assert read_timecode(crop(canvas, (500, 300, 320, 180), edges)) == tc, edges


def encode_decode(canvases: list[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.uint8]]:
    """Encode luma canvases (1280x720) with libx264 at 2.5 Mbit/s and decode them again."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = 1280, 720
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 15)
    codec.framerate = Fraction(15)
    codec.bit_rate = 2_500_000
    codec.options = {"preset": "veryfast", "tune": "zerolatency", "bf": "0"}
    decoder = av.CodecContext.create("h264", "r")
    out: list[npt.NDArray[np.uint8]] = []

    def decode(packets: list[av.Packet]) -> None:
        for packet in packets:
            for frame in decoder.decode(packet):
                out.append(np.asarray(frame.to_ndarray()[:720], dtype=np.uint8))

    for i, y in enumerate(canvases):
        planes = np.concatenate([y, np.full((360, 1280), 128, np.uint8)])
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = i
        decode(codec.encode(frame))
    decode(codec.encode(None))
    return out


def test_after_h264_in_a_quarter_tile() -> None:
    box = (650, 362, 320, 180)  # not macroblock-aligned
    codes = [Timecode(capture_ms=NOW_MS + 67 * i, source=3) for i in range(12)]
    canvases = []
    for i, tc in enumerate(codes):
        y = textured_picture(1280, 720, seed=i)
        paint_timecode(y, tc)
        canvas = np.zeros((720, 1280), np.uint8)
        canvas[box[1] : box[1] + 180, box[0] : box[0] + 320] = cv2.resize(
            y, (320, 180), interpolation=cv2.INTER_AREA
        )
        canvases.append(canvas)
    decoded = encode_decode(canvases)
    assert len(decoded) == len(codes)
    for i, (y, tc) in enumerate(zip(decoded, codes, strict=True)):
        for edges in EDGE_SHIFTS:
            assert read_timecode(crop(y, box, edges)) == tc, (i, edges)


def test_random_noise_is_none() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        assert read_timecode(rng.integers(0, 256, (180, 320)).astype(np.uint8)) is None
    assert read_timecode(np.full((180, 320), 16, np.uint8)) is None
    assert read_timecode(np.zeros((4, 4), np.uint8)) is None


@pytest.mark.parametrize("bit", [0, 17, 47, 55, 63])
def test_corrupted_bit_is_none(bit: int) -> None:
    y = textured_picture(1280, 720)
    paint_timecode(y, Timecode(capture_ms=NOW_MS, source=9))
    # Flip one payload cell: rows of 32 payload cells between the two reference columns.
    row, col = divmod(bit, 32)
    cell_h, cell_w = 720 * TIMECODE_BAND / 2, 1280 / 34
    cy, cx = int((row + 0.5) * cell_h), int((col + 1.5) * cell_w)
    r = int(cell_w / 3)
    y[cy - r : cy + r, cx - r : cx + r] = WHITE + BLACK - y[cy, cx]
    assert read_timecode(y) is None
