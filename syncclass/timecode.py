"""Machine-readable timecode burned into the top band of a video picture.

The code lets a receiver measure glass-to-glass latency even after the picture was scaled
down (to 1/4 of its width in a composite tile) and went through lossy H.264. It is pure
numpy and has no I/O.

Layout (all positions are fractions of the picture, so the reader needs no knowledge of
the painted size): the band is the top :data:`TIMECODE_BAND` of the picture, split into
:data:`ROWS` rows of :data:`COLUMNS` equal cells. The first and last cell of every row are
reference cells (row 0: white … black, row 1: black … white) that give the reader its
black and white levels; the remaining 64 cells carry the payload, most significant bit
first, white = 1:

======== ======== ======================================================
bits     field    meaning
======== ======== ======================================================
63..16   48 bits  ``capture_ms``: wall-clock epoch time of capture, ms
15..8    8 bits   ``source``: small number of the source (classroom)
7..0     8 bits   CRC-8/ITU (poly 0x07, init 0x00, xorout 0x55) of the
                  7 bytes above
======== ======== ======================================================

Cells are 1/34 of the width and 1/16 of the height: at 320x180 (a 1280x720 picture in a
1/4-width tile) that is ~9.4x11 px, so sampling at cell centres tolerates the tile's crop
being off by ±2 px at any edge plus a pixel of blur from scaling and H.264.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLACK",
    "COLUMNS",
    "ROWS",
    "TIMECODE_BAND",
    "WHITE",
    "Timecode",
    "crc8",
    "paint_timecode",
    "read_timecode",
    "timecode_band_height",
]

TIMECODE_BAND: float = 1 / 8
"""Fraction of the picture height, from the top, that the timecode occupies."""

ROWS = 2
"""Rows of cells in the band."""
COLUMNS = 34
"""Cells per row: 2 reference cells + 32 payload bits."""

BLACK = 16
"""Video-range black luma level."""
WHITE = 235
"""Video-range white luma level."""

MIN_WIDTH = 160
"""Smallest picture width :func:`paint_timecode` accepts, px."""
MIN_HEIGHT = 90
"""Smallest picture height :func:`paint_timecode` accepts, px."""

_CAPTURE_BITS = 48
_PAYLOAD_BITS = 64
_DATA_PER_ROW = COLUMNS - 2
# Relative offsets (in cells) of the 3x3 sample points around each cell centre: averaging
# a few pixels rides over H.264 ringing without leaving the cell when the crop is off.
_SAMPLE_OFFSETS = (-0.15, 0.0, 0.15)
# Minimum white-minus-black contrast of the reference cells, in luma steps (nominal 219).
_MIN_CONTRAST = 80.0
# Every payload cell must be at least this fraction of the contrast away from the threshold.
_MIN_MARGIN = 0.2


def _crc8_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8_TABLE = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8/ITU of ``data`` (poly 0x07, init 0x00, xorout 0x55); never 0 for all-zero input."""
    crc = 0
    for b in data:
        crc = _CRC8_TABLE[crc ^ b]
    return crc ^ 0x55


@dataclass(frozen=True)
class Timecode:
    """What one frame's band says."""

    capture_ms: int
    """Wall-clock (Unix epoch) time at which the frame was captured, ms; 48 bits."""
    source: int
    """Small number of the source that painted the frame, 0..255."""

    def __post_init__(self) -> None:
        if not 0 <= self.capture_ms < 1 << _CAPTURE_BITS:
            raise ValueError(f"timecode capture_ms {self.capture_ms} does not fit in 48 bits")
        if not 0 <= self.source <= 255:
            raise ValueError(f"timecode source {self.source} is not in 0..255")

    def __bytes__(self) -> bytes:
        """The 8-byte payload: capture_ms (6 bytes, big-endian), source, CRC-8."""
        head = self.capture_ms.to_bytes(6, "big") + bytes((self.source,))
        return head + bytes((crc8(head),))

    @classmethod
    def parse(cls, data: bytes) -> Timecode:
        """Decode an 8-byte payload; raise ``ValueError`` if its length or CRC is wrong."""
        if len(data) != 8:
            raise ValueError(f"timecode payload length {len(data)} is not 8")
        if crc8(data[:7]) != data[7]:
            raise ValueError("timecode CRC mismatch")
        return cls(capture_ms=int.from_bytes(data[:6], "big"), source=data[6])


def timecode_band_height(height: int) -> int:
    """Height in px of the timecode band of a picture ``height`` px tall (rounded up)."""
    return math.ceil(height * TIMECODE_BAND)


def _cell_levels(tc: Timecode) -> npt.NDArray[np.uint8]:
    """Luma level of every cell, shape (ROWS, COLUMNS)."""
    value = int.from_bytes(bytes(tc), "big")
    bits = [(value >> (_PAYLOAD_BITS - 1 - i)) & 1 for i in range(_PAYLOAD_BITS)]
    levels = np.where(np.array(bits, dtype=bool), WHITE, BLACK).astype(np.uint8)
    cells = np.empty((ROWS, COLUMNS), dtype=np.uint8)
    cells[:, 1:-1] = levels.reshape(ROWS, _DATA_PER_ROW)
    cells[0, 0], cells[0, -1] = WHITE, BLACK
    cells[1, 0], cells[1, -1] = BLACK, WHITE
    return cells


@functools.lru_cache(maxsize=64)
def _paint_geometry(height: int, width: int) -> tuple[tuple[int, ...], npt.NDArray[np.intp]]:
    """Row edges of the cell rows (ROWS + 1 values) and the cell column of every pixel column."""
    band = TIMECODE_BAND * height
    row_edges = tuple(round(r * band / ROWS) for r in range(ROWS + 1))
    column_of = (np.arange(width) * COLUMNS // width).astype(np.intp)
    column_of.flags.writeable = False
    return row_edges, column_of


def paint_timecode(y: npt.NDArray[np.uint8], tc: Timecode) -> None:
    """Paint ``tc`` in place into the top band of the luma plane ``y`` (uint8, H x W).

    The picture must be at least 160x90 px. Cost: ~25 µs at 1280x720.
    """
    if y.ndim != 2 or y.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 luma plane, got {y.ndim}-D {y.dtype}")
    height, width = y.shape
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        raise ValueError(f"picture {width}x{height} is smaller than {MIN_WIDTH}x{MIN_HEIGHT}")
    cells = _cell_levels(tc)
    row_edges, column_of = _paint_geometry(height, width)
    for r in range(ROWS):
        y[row_edges[r] : row_edges[r + 1]] = cells[r, column_of]


@functools.lru_cache(maxsize=64)
def _sample_points(height: int, width: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Pixel rows and columns of the sample points, each shape (ROWS * COLUMNS, 9)."""
    cell_h = TIMECODE_BAND * height / ROWS
    cell_w = width / COLUMNS
    rows = np.repeat(np.arange(ROWS), COLUMNS)
    cols = np.tile(np.arange(COLUMNS), ROWS)
    offsets = np.array(_SAMPLE_OFFSETS)
    dy = np.repeat(offsets, len(offsets))
    dx = np.tile(offsets, len(offsets))
    py = ((rows[:, None] + 0.5 + dy[None, :]) * cell_h).astype(np.intp)
    px = ((cols[:, None] + 0.5 + dx[None, :]) * cell_w).astype(np.intp)
    np.clip(py, 0, height - 1, out=py)
    np.clip(px, 0, width - 1, out=px)
    py.flags.writeable = False
    px.flags.writeable = False
    return py, px


def read_timecode(y: npt.NDArray[np.uint8]) -> Timecode | None:
    """Read the timecode from the luma plane ``y`` of a picture (possibly scaled, re-encoded
    and cropped a few px off); ``None`` if there is none, it is unreadable or its CRC fails.

    Samples 9 points at each of the 68 cell centres (no scanning): ~30 µs.
    """
    if y.ndim != 2:
        return None
    height, width = y.shape
    if width < COLUMNS * 2 or height < 16 * ROWS:
        return None
    py, px = _sample_points(height, width)
    values = y[py, px].mean(axis=1, dtype=np.float32).reshape(ROWS, COLUMNS)
    white = (values[0, 0] + values[1, -1]) / 2
    black = (values[0, -1] + values[1, 0]) / 2
    contrast = white - black
    if contrast < _MIN_CONTRAST:
        return None
    data = values[:, 1:-1].reshape(-1) - (white + black) / 2
    if np.abs(data).min() < _MIN_MARGIN * contrast:
        return None
    payload = np.packbits(data > 0).tobytes()
    try:
        return Timecode.parse(payload)
    except ValueError:
        return None
