"""View layout geometry: where each classroom's picture goes on a composed canvas.

Pure functions, no I/O. Every coordinate and size is in pixels of the composed canvas and
is even, so that each rectangle maps exactly onto the half-resolution chroma planes of
YUV 4:2:0 (one chroma sample per 2x2 luma block).

Two layouts exist:

* :func:`grid_layout` — a near-square grid of equal 16:9 cells, centred on the canvas.
* :func:`speaker_layout` — one featured classroom large in the top-left corner, the others
  in small tiles down the right-hand column and, when needed, along the bottom rows.

Both are deterministic, keep every tile inside the canvas and never overlap two tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Width / height of the cells the layouts aim for.
ASPECT_W = 16
ASPECT_H = 9

# Speaker layouts as (m, s): the canvas is split into an m x m grid of small tiles and the
# featured source covers the top-left s x s of them; the other m*m - s*s cells hold the
# others. The first entry whose capacity fits is used, so the featured source stays as big
# as possible and only shrinks when there are many others.
_SPEAKER_SPLITS: tuple[tuple[int, int], ...] = ((4, 3), (5, 4), (5, 3))


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
    """Human-readable name drawn on the tile (ASCII)."""
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


def grid_layout(
    width: int, height: int, sources: Sequence[str], labels: Mapping[str, str]
) -> list[Tile]:
    """Equal 16:9 tiles in a near-square grid, centred on a ``width`` × ``height`` canvas.

    The number of columns is the one giving the largest tiles (ties: fewer columns). Tiles
    are in ``sources`` order, row by row; an incomplete last row is centred. ``labels``
    maps classroom id to the label drawn on its tile (default: the id). Duplicate ids are
    shown once. No sources → no tiles.
    """
    _check_canvas(width, height)
    ids = _unique(sources)
    n = len(ids)
    if n == 0:
        return []
    best: tuple[int, int, int, int] | None = None  # (cols, rows, tile_w, tile_h)
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        tile_w, tile_h = _cell_size(width / cols, height / rows)
        if tile_w < 2 or tile_h < 2:
            continue
        if best is None or tile_w * tile_h > best[2] * best[3]:
            best = (cols, rows, tile_w, tile_h)
    if best is None:
        raise ValueError(f"{n} sources do not fit a {width}x{height} canvas")
    cols, rows, tile_w, tile_h = best
    y0 = _even_floor((height - rows * tile_h) / 2)
    tiles: list[Tile] = []
    for index, cid in enumerate(ids):
        row, col = divmod(index, cols)
        in_row = min(cols, n - row * cols)
        x0 = _even_floor((width - in_row * tile_w) / 2)
        rect = Rect(x0 + col * tile_w, y0 + row * tile_h, tile_w, tile_h)
        tiles.append(Tile(cid, labels.get(cid, cid), rect))
    return tiles


def speaker_layout(
    width: int,
    height: int,
    featured: str | None,
    others: Sequence[str],
    labels: Mapping[str, str],
) -> list[Tile]:
    """The featured classroom large, the others small around it.

    The canvas is cut into an m x m grid of small tiles (canvas aspect, so 16:9 on a 16:9
    canvas) and the featured source covers the top-left s x s of them: up to 7 others use
    m=4, s=3 (at 1280x720: featured 960x540, others 320x180 down the right column, then
    along the bottom row), up to 9 use 5/4, up to 16 use 5/3 (the featured shrinks),
    beyond that 6/4, 7/5, ... Others fill the right-hand columns top to bottom, then the
    bottom rows left to right. With no others the featured tile is the whole canvas; with
    ``featured`` None this is :func:`grid_layout` of ``others``. The featured tile comes
    first in the result.
    """
    _check_canvas(width, height)
    if featured is None:
        return grid_layout(width, height, others, labels)
    rest = _unique(others, exclude=featured)
    if not rest:
        return [Tile(featured, labels.get(featured, featured), Rect(0, 0, width, height), True)]
    k = len(rest)
    split = next(((m, s) for m, s in _SPEAKER_SPLITS if m * m - s * s >= k), None)
    if split is None:
        m = 6
        while 4 * m - 4 < k:
            m += 1
        split = (m, m - 2)
    m, s = split
    unit_w = _even_floor(width / m)
    unit_h = _even_floor(height / m)
    if unit_w < 2 or unit_h < 2:
        raise ValueError(f"{k + 1} sources do not fit a {width}x{height} canvas")
    x0 = _even_floor((width - m * unit_w) / 2)
    y0 = _even_floor((height - m * unit_h) / 2)
    tiles = [
        Tile(featured, labels.get(featured, featured), Rect(x0, y0, s * unit_w, s * unit_h), True)
    ]
    cells = [(row, col) for row in range(s) for col in range(s, m)]
    cells += [(row, col) for row in range(s, m) for col in range(m)]
    for cid, (row, col) in zip(rest, cells, strict=False):
        rect = Rect(x0 + col * unit_w, y0 + row * unit_h, unit_w, unit_h)
        tiles.append(Tile(cid, labels.get(cid, cid), rect))
    return tiles
