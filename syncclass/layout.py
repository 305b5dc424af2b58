"""View layout geometry: where each classroom's picture goes on a composed canvas.

Pure functions, no I/O. Every coordinate and size is in pixels of the composed canvas and
is even, so that each rectangle maps exactly onto the half-resolution chroma planes of
YUV 4:2:0 (one chroma sample per 2x2 luma block).

Three layouts exist, each covering the whole canvas (at most a pixel pair of rounding and
the letterbox of pictures whose shape differs from the canvas's is left as background):

* :func:`grid_layout` — every source, as equal as a tiling of that count allows.
* :func:`speaker_layout` — one featured classroom large, the others small around it.
* :func:`courseware_layout` — the teacher's courseware large, the teacher
  picture-in-picture and the classrooms as a strip.

A square cannot be cut into 2, 3 or 5 squares (nor a 16:9 canvas into that many 16:9
pictures), so some arrangements draw small pictures over the lower part of a large one
(picture-in-picture). Tiles are returned in draw order; a later tile never covers the
timecode band (top 1/8) of an earlier one, and two small tiles never overlap.
:func:`unused_fraction` measures what a layout leaves as background.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Width / height of the cells the layouts aim for.
ASPECT_W = 16
ASPECT_H = 9

def _even_floor(value: float) -> int:
    """Largest even integer not above ``value`` (``value`` ≥ 0)."""
    return int(value) // 2 * 2


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle on the canvas, in pixels; every field is even."""

    x: int
    """Left edge, pixels from the canvas's left."""
    y: int
    """Top edge, pixels from the canvas's top."""
    w: int
    """Width in pixels."""
    h: int
    """Height in pixels."""

    def __post_init__(self) -> None:
        for name in ("x", "y", "w", "h"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"Rect.{name} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"Rect.{name} must not be negative, got {value}")
            if value % 2:
                raise ValueError(f"Rect.{name} must be even for YUV420, got {value}")

    @property
    def right(self) -> int:
        """One past the right-most column, in pixels."""
        return self.x + self.w

    @property
    def bottom(self) -> int:
        """One past the bottom row, in pixels."""
        return self.y + self.h

    @property
    def area(self) -> int:
        """Area in square pixels."""
        return self.w * self.h

    def intersects(self, other: Rect) -> bool:
        """Whether the two rectangles share at least one pixel."""
        return (
            self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )

    def contains(self, other: Rect) -> bool:
        """Whether ``other`` lies entirely inside this rectangle."""
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )

    def to_dict(self) -> dict[str, int]:
        """JSON-friendly form: ``{"x": .., "y": .., "w": .., "h": ..}``."""
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rect:
        """Parse :meth:`to_dict` output; raises ``ValueError`` on a missing or bad field."""
        try:
            values = {name: data[name] for name in ("x", "y", "w", "h")}
        except KeyError as exc:
            raise ValueError(f"Rect is missing field {exc.args[0]!r}") from None
        except TypeError:
            raise ValueError(f"Rect must be a mapping, got {type(data).__name__}") from None
        return cls(**values)


@dataclass(frozen=True)
class Tile:
    """One classroom's place in a view."""

    classroom_id: str
    """The classroom whose picture fills this tile."""
    label: str
    """Human-readable name drawn on the tile (any Unicode text)."""
    rect: Rect
    """The tile's area on the canvas; the picture is fitted inside it (see :func:`fit_rect`)."""
    featured: bool = False
    """Whether this is the large tile of a speaker layout."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "classroom_id": self.classroom_id,
            "label": self.label,
            "rect": self.rect.to_dict(),
            "featured": self.featured,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tile:
        """Parse :meth:`to_dict` output; raises ``ValueError`` on a missing or bad field."""
        try:
            classroom_id = data["classroom_id"]
            label = data.get("label", classroom_id)
            rect = Rect.from_dict(data["rect"])
            featured = data.get("featured", False)
        except KeyError as exc:
            raise ValueError(f"Tile is missing field {exc.args[0]!r}") from None
        except (TypeError, AttributeError):
            raise ValueError(f"Tile must be a mapping, got {type(data).__name__}") from None
        if not isinstance(classroom_id, str) or not isinstance(label, str):
            raise ValueError("Tile classroom_id and label must be strings")
        if not isinstance(featured, bool):
            raise ValueError(f"Tile featured must be a bool, got {featured!r}")
        return cls(classroom_id=classroom_id, label=label, rect=rect, featured=featured)


def _check_canvas(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"canvas must have positive even dimensions, got {width}x{height}")


def _unique(ids: Sequence[str], exclude: str | None = None) -> list[str]:
    """``ids`` in order without duplicates (and without ``exclude``)."""
    seen: set[str] = set()
    out: list[str] = []
    for cid in ids:
        if cid in seen or cid == exclude:
            continue
        seen.add(cid)
        out.append(cid)
    return out


def fit_rect(src_w: int, src_h: int, box: Rect) -> Rect:
    """The largest rectangle with the source's aspect ratio that fits ``box``, centred.

    ``src_w`` × ``src_h`` is the source picture size in pixels. The result is even-aligned
    (so it may differ from the exact aspect ratio by up to a pixel or two) and at least
    2x2 pixels; it lies inside ``box``.
    """
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"source size must be positive, got {src_w}x{src_h}")
    if box.w < 2 or box.h < 2:
        raise ValueError(f"box is too small to hold a picture: {box.w}x{box.h}")
    scale = min(box.w / src_w, box.h / src_h)
    # Round to the nearest even size, but never past the box.
    w = min(box.w, max(2, round(src_w * scale / 2) * 2))
    h = min(box.h, max(2, round(src_h * scale / 2) * 2))
    x = box.x + _even_floor((box.w - w) / 2)
    y = box.y + _even_floor((box.h - h) / 2)
    return Rect(x, y, w, h)


def _cell_size(cell_w: float, cell_h: float) -> tuple[int, int]:
    """The largest even 16:9 size fitting a ``cell_w`` × ``cell_h`` cell, in pixels."""
    w = min(cell_w, cell_h * ASPECT_W / ASPECT_H)
    h = w * ASPECT_H / ASPECT_W
    return _even_floor(w), _even_floor(h)


@dataclass(frozen=True)
class _Cells:
    """An m x m grid of canvas-shaped cells; edges are even and the last ones are the
    canvas edges, so blocks of cells cover the canvas with no seam."""

    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @classmethod
    def of(cls, width: int, height: int, m: int) -> _Cells:
        xs = (*tuple(_even_floor(i * width / m) for i in range(m)), width)
        ys = (*tuple(_even_floor(i * height / m) for i in range(m)), height)
        if min(b - a for a, b in itertools.pairwise(xs)) < 2 or min(
            b - a for a, b in itertools.pairwise(ys)
        ) < 2:
            raise ValueError(f"a {m}x{m} grid of cells does not fit a {width}x{height} canvas")
        return cls(xs, ys)

    def block(self, col: int, row: int, size: int = 1) -> Rect:
        """The ``size`` x ``size`` cells whose top-left cell is (``col``, ``row``)."""
        x, y = self.xs[col], self.ys[row]
        return Rect(x, y, self.xs[col + size] - x, self.ys[row + size] - y)


# Grid arrangements that fill the canvas, by number of sources: (m, blocks) where blocks
# are (col, row, size) in an m x m grid of canvas-shaped cells, in source order. A square
# cannot be cut into 2, 3 or 5 squares, so those counts lay the last picture(s) over the
# lower part of an earlier one (picture-in-picture), never over its timecode band; the
# other counts are exact tilings, as equal as a tiling of that count allows.
_GRID_BLOCKS: dict[int, tuple[int, tuple[tuple[int, int, int], ...]]] = {
    1: (1, ((0, 0, 1),)),
    2: (3, ((0, 0, 3), (2, 2, 1))),
    3: (3, ((0, 0, 3), (2, 2, 1), (1, 2, 1))),
    4: (2, ((0, 0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 1))),
    5: (4, ((0, 0, 2), (2, 0, 2), (0, 2, 2), (2, 2, 2), (3, 3, 1))),
    6: (3, ((0, 0, 2), (2, 0, 1), (2, 1, 1), (0, 2, 1), (1, 2, 1), (2, 2, 1))),
    7: (4, ((0, 0, 2), (2, 0, 2), (0, 2, 2), (2, 2, 1), (3, 2, 1), (2, 3, 1), (3, 3, 1))),
    8: (4, ((0, 0, 3), (3, 0, 1), (3, 1, 1), (3, 2, 1), (0, 3, 1), (1, 3, 1), (2, 3, 1),
            (3, 3, 1))),
    9: (3, tuple((c, r, 1) for r in range(3) for c in range(3))),
}

#: Small pictures laid over the bottom row of a full-canvas picture before the layouts
#: switch to a large picture with an L-shaped strip (see :func:`big_and_strip`).
PIP_MAX = 4


def grid_layout(
    width: int, height: int, sources: Sequence[str], labels: Mapping[str, str]
) -> list[Tile]:
    """Every source on a ``width`` × ``height`` canvas with no unused background.

    Up to 9 sources follow a fixed arrangement of canvas-shaped blocks (``_GRID_BLOCKS``):
    1, 4 and 9 are equal grids; 6, 7 and 8 are exact tilings with one (or three) larger
    pictures first; 2, 3 and 5 lay the last picture(s) over the lower part of an earlier
    one (a square cannot be cut into 2, 3 or 5 squares). Tiles are in draw order: a later
    tile may cover the lower part of an earlier one, never its timecode band. Beyond 9, a
    near-square grid of equal cells (rows filled in order; the last row may be short).
    ``labels`` maps classroom id to the label drawn on its tile (default: the id).
    Duplicate ids are shown once. No sources → no tiles.
    """
    _check_canvas(width, height)
    ids = _unique(sources)
    n = len(ids)
    if n == 0:
        return []
    arrangement = _GRID_BLOCKS.get(n)
    if arrangement is not None:
        m, blocks = arrangement
        cells = _Cells.of(width, height, m)
        return [
            Tile(cid, labels.get(cid, cid), cells.block(*block))
            for cid, block in zip(ids, blocks, strict=True)
        ]
    m = math.ceil(math.sqrt(n))
    rows = -(-n // m)
    unit_w, unit_h = _cell_size(width / m, height / rows)
    if unit_w < 2 or unit_h < 2:
        raise ValueError(f"{n} sources do not fit a {width}x{height} canvas")
    x0 = _even_floor((width - m * unit_w) / 2)
    y0 = _even_floor((height - rows * unit_h) / 2)
    return [
        Tile(cid, labels.get(cid, cid),
             Rect(x0 + (i % m) * unit_w, y0 + (i // m) * unit_h, unit_w, unit_h))
        for i, cid in enumerate(ids)
    ]


def big_and_strip(
    width: int,
    height: int,
    big: str,
    smalls: Sequence[str],
    labels: Mapping[str, str],
) -> list[Tile]:
    """One picture large and ``smalls`` around it, covering the whole canvas.

    * no smalls: ``big`` fills the canvas;
    * 1 to :data:`PIP_MAX` smalls: ``big`` fills the canvas and the smalls (1/4 of the
      canvas width each) lie over its bottom row, right-aligned, the first in the
      bottom-right corner (picture-in-picture); ``big``'s top 3/4 stays whole;
    * more: a p x p grid of canvas-shaped cells, p = (n + 1) // 2 for n smalls; ``big``
      covers the top-left (p-1) x (p-1) cells and the smalls fill the right column top to
      bottom, then the bottom row left to right (2p - 1 cells, an exact tiling). With an
      even n the last small lies over ``big``'s bottom-right cell.

    The big tile comes first (``featured``); tiles are in draw order.
    """
    _check_canvas(width, height)
    rest = _unique(smalls, exclude=big)
    name = labels.get(big, big)
    n = len(rest)
    if n == 0:
        return [Tile(big, name, Rect(0, 0, width, height), True)]
    if n <= PIP_MAX:
        cells = _Cells.of(width, height, 4)
        tiles = [Tile(big, name, Rect(0, 0, width, height), True)]
        tiles += [Tile(cid, labels.get(cid, cid), cells.block(3 - i, 3))
                  for i, cid in enumerate(rest)]
        return tiles
    p = (n + 1) // 2
    cells = _Cells.of(width, height, p)
    slots = [cells.block(p - 1, row) for row in range(p)]
    slots += [cells.block(col, p - 1) for col in range(p - 1)]
    slots.append(cells.block(p - 2, p - 2))  # used only when n is even
    tiles = [Tile(big, name, cells.block(0, 0, p - 1), True)]
    tiles += [Tile(cid, labels.get(cid, cid), rect) for cid, rect in zip(rest, slots,
                                                                          strict=False)]
    return tiles


def speaker_layout(
    width: int,
    height: int,
    featured: str | None,
    others: Sequence[str],
    labels: Mapping[str, str],
) -> list[Tile]:
    """The featured classroom large, the others small around it (:func:`big_and_strip`).

    At 1280x720: up to 4 others are 320x180 pictures over the bottom row of a full-canvas
    featured picture; 5 or 6 others are 426x240 around an 854x480 featured picture; 7 or
    8 are 320x180 around a 960x540 one. With ``featured`` None this is
    :func:`grid_layout` of ``others``. The featured tile comes first in the result.
    """
    _check_canvas(width, height)
    if featured is None:
        return grid_layout(width, height, others, labels)
    return big_and_strip(width, height, featured, others, labels)


def courseware_layout(
    width: int,
    height: int,
    courseware: str,
    teacher: str | None,
    classrooms: Sequence[str],
    labels: Mapping[str, str],
) -> list[Tile]:
    """Courseware (the teacher's screen) large, the teacher picture-in-picture, and the
    classrooms as a strip: :func:`big_and_strip` with the teacher as the first small
    picture (bottom-right corner, or top of the right-hand column)."""
    smalls = ([teacher] if teacher is not None else []) + list(classrooms)
    return big_and_strip(width, height, courseware, smalls, labels)


def _union_area(rects: Sequence[Rect]) -> int:
    """Area covered by at least one of ``rects``, in square pixels (exact)."""
    xs = sorted({x for r in rects for x in (r.x, r.right)})
    area = 0
    for left, right in itertools.pairwise(xs):
        spans = sorted((r.y, r.bottom) for r in rects if r.x <= left and r.right >= right)
        covered, top, bottom = 0, -1, -1
        for y0, y1 in spans:
            if y0 > bottom:
                covered += bottom - top
                top, bottom = y0, y1
            else:
                bottom = max(bottom, y1)
        covered += bottom - top
        area += covered * (right - left)
    return area


def content_rects(
    tiles: Sequence[Tile], sizes: Mapping[str, tuple[int, int]] | None = None,
    default_size: tuple[int, int] = (1280, 720),
) -> list[Rect]:
    """Where each tile's picture goes (:func:`fit_rect`), given each source's size in px
    (``sizes`` by classroom id, else ``default_size``)."""
    sizes = sizes or {}
    return [fit_rect(*sizes.get(t.classroom_id, default_size), t.rect) for t in tiles]


def unused_fraction(
    tiles: Sequence[Tile], width: int, height: int,
    sizes: Mapping[str, tuple[int, int]] | None = None,
    default_size: tuple[int, int] = (1280, 720),
) -> float:
    """Fraction (0..1) of the ``width`` x ``height`` canvas that no picture covers: the
    background between tiles plus the letterbox bars inside them."""
    _check_canvas(width, height)
    if not tiles:
        return 1.0
    covered = _union_area(content_rects(tiles, sizes, default_size))
    return 1.0 - covered / (width * height)


def hidden_fraction(tiles: Sequence[Tile], index: int) -> float:
    """Fraction (0..1) of tile ``index``'s area that later tiles (drawn over it) cover."""
    rect = tiles[index].rect
    clipped = []
    for tile in tiles[index + 1:]:
        r = tile.rect
        x0, y0 = max(r.x, rect.x), max(r.y, rect.y)
        x1, y1 = min(r.right, rect.right), min(r.bottom, rect.bottom)
        if x1 > x0 and y1 > y0:
            clipped.append(Rect(x0, y0, x1 - x0, y1 - y0))
    return _union_area(clipped) / rect.area if clipped else 0.0
