"""YUV 4:2:0 compositor: decoded classroom pictures into one view canvas.

Everything stays in planar YUV420 (no BGR round trip): each source's Y, U and V planes
are scaled with OpenCV straight into the planes of the output ``yuv420p``
:class:`av.VideoFrame`, ready for :class:`syncclass.codec.H264Encoder`. Output frames come
from a small pool and are reused once nobody else holds them (checked with
``sys.getrefcount``): a fresh 1280x720 frame page-faults on first write (measured ≈ 1 ms
for ``VideoFrame.from_ndarray`` when consumers keep the last few frames, against ≈ 0.1 ms
to copy the background into a warm pooled frame). A frame a consumer still holds is never
written again.

Scaling: while the target is at most half the source in both directions the planes are
halved with ``INTER_AREA`` (an exact 2x box filter, fast and alias-free), then the rest is
done with ``INTER_LINEAR``. Measured at 1280x720 → 320x180 (Y+U+V): INTER_AREA in one
step ≈ 0.7 ms, INTER_LINEAR ≈ 0.11 ms (aliases), halving twice ≈ 0.15 ms; 1280x720 →
960x540: INTER_AREA ≈ 5.9 ms, INTER_LINEAR ≈ 0.8 ms, ``frame.reformat`` ≈ 0.8 ms.

The top :data:`~syncclass.timecode.TIMECODE_BAND` of every shown picture carries a timecode
that receivers read, so labels and placeholders are never drawn there and a frozen
picture is dimmed only below it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import av
import cv2
import numpy as np
import numpy.typing as npt
from av.video.frame import PictureType

from syncclass.fonts import fit_text, render_text
from syncclass.layout import Rect, Tile, fit_rect
from syncclass.timecode import TIMECODE_BAND

logger = logging.getLogger(__name__)

Plane = npt.NDArray[np.uint8]

#: Luma of the canvas outside any tile (video black).
CANVAS_Y = 16
#: Luma of a tile's background (letterbox bars, missing source): dark grey.
TILE_Y = 40
#: Neutral chroma.
NEUTRAL_UV = 128
#: Luma of the box behind label text, and of the text.
LABEL_BOX_Y = 24
LABEL_TEXT_Y = 235
#: Badge (e.g. a raised hand): yellow box (BT.601 Y, U, V) with dark text.
BADGE_BOX_Y, BADGE_U, BADGE_V = 210, 16, 146

_LABEL_MARGIN = 4  # px between the tile edge and the label box (even)
_LABEL_PAD = 4  # px between the box edge and the text (even)
_SPRITE_CACHE_MAX = 256
# References to a pooled frame held only by the pool list, counted by sys.getrefcount on
# ``pool[i]``: the list's and the call argument's.
_FREE_REFCOUNT = 2


@dataclass
class SourceFrame:
    """The latest decoded picture of one classroom."""

    frame: av.VideoFrame
    """The decoded picture (yuv420p preferred; other formats are converted)."""
    received_at: float
    """When it was received, monotonic seconds (same clock as the compositor's)."""
    captured_at: float | None = None
    """When the sender captured it, on the sender's wall clock (Unix seconds, from its
    RTCP sender reports); None until the first report."""


def _planes(frame: av.VideoFrame) -> tuple[Plane, Plane, Plane]:
    """Zero-copy numpy views (height x width, row stride = line size) of Y, U, V."""
    out: list[Plane] = []
    for plane in frame.planes[:3]:
        buf = np.frombuffer(memoryview(plane), dtype=np.uint8)
        rows = buf[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)
        out.append(rows[:, : plane.width])
    return out[0], out[1], out[2]


def _halvings(src: Plane, width: int, height: int) -> int:
    """How many times ``src`` is halved (area averaging) on its way to ``width`` x
    ``height``: while it is at least twice as large both ways."""
    h, w = src.shape
    count = 0
    while w >= 2 * width and h >= 2 * height and w >= 2 and h >= 2:
        w, h = w // 2, h // 2
        count += 1
    return count


def _halve(src: Plane) -> Plane:
    h, w = src.shape
    return cast(Plane, cv2.resize(src, (w // 2, h // 2), interpolation=cv2.INTER_AREA))


def _scale_plane(src: Plane, width: int, height: int, dst: Plane | None = None) -> Plane:
    """``src`` scaled to ``width`` x ``height`` px (into ``dst`` when given)."""
    h, w = src.shape
    if (w, h) == (width, height):
        if dst is None:
            return src.copy()
        dst[...] = src
        return dst
    for _ in range(_halvings(src, width, height)):
        src = _halve(src)
    return _finish_scale(src, width, height, dst)


def _finish_scale(src: Plane, width: int, height: int, dst: Plane | None) -> Plane:
    """The last step of :func:`_scale_plane`: ``src``, already halved as far as it goes,
    to the exact size (bilinear)."""
    h, w = src.shape
    if (w, h) == (width, height):
        if dst is None:
            return src
        dst[...] = src
        return dst
    if dst is None:
        return cast(Plane, cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR))
    result = cv2.resize(src, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)
    if result is not dst:  # OpenCV reallocated (should not happen): copy back
        dst[...] = result
    return dst


def _scale_frame(
    frame: av.VideoFrame, width: int, height: int, dst: tuple[Plane, Plane, Plane] | None
) -> tuple[Plane, Plane, Plane]:
    y, u, v = _planes(frame)
    if dst is None:
        return (
            _scale_plane(y, width, height),
            _scale_plane(u, width // 2, height // 2),
            _scale_plane(v, width // 2, height // 2),
        )
    return (
        _scale_plane(y, width, height, dst[0]),
        _scale_plane(u, width // 2, height // 2, dst[1]),
        _scale_plane(v, width // 2, height // 2, dst[2]),
    )


class ScaleCache:
    """Scaled planes shared by the compositors of one composition tick.

    A source shown at the same size in two views is scaled once. Keys are the identity
    of the :class:`av.VideoFrame` plus the target size; the frame is kept referenced so
    its id cannot be reused while cached. Call :meth:`clear` at the start of every tick.
    Not locked: compositors sharing one cache from several threads may at worst scale a
    picture twice.
    """

    def __init__(self) -> None:
        self._entries: dict[
            tuple[int, int, int], tuple[av.VideoFrame, tuple[Plane, Plane, Plane]]
        ] = {}
        self._pyramids: dict[int, tuple[av.VideoFrame, list[list[Plane]]]] = {}
        self.hits = 0
        """Lookups served from the cache since creation."""
        self.misses = 0
        """Lookups that had to scale."""
        self.halvings = 0
        """Planes halved since creation: a picture shown at two sizes (a receiving
        classroom in both views) is halved from full size once, not once per size."""

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry (hit/miss counters are kept)."""
        self._entries.clear()
        self._pyramids.clear()

    def _levels(self, frame: av.VideoFrame) -> list[list[Plane]]:
        """Per plane (Y, U, V): the plane, then its successive halvings so far."""
        entry = self._pyramids.get(id(frame))
        if entry is None or entry[0] is not frame:
            entry = (frame, [[plane] for plane in _planes(frame)])
            self._pyramids[id(frame)] = entry
        return entry[1]

    def _fit(self, levels: list[Plane], width: int, height: int) -> Plane:
        """What :func:`_scale_plane` gives for ``levels[0]``, reusing the halvings."""
        src = levels[0]
        if src.shape == (height, width):
            return src.copy()
        count = _halvings(src, width, height)
        while len(levels) <= count:
            levels.append(_halve(levels[-1]))
            self.halvings += 1
        return _finish_scale(levels[count], width, height, None)

    def scaled(self, frame: av.VideoFrame, width: int, height: int) -> tuple[Plane, Plane, Plane]:
        """Y, U, V of ``frame`` (yuv420p) scaled to ``width`` x ``height`` px; read-only."""
        key = (id(frame), width, height)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is frame:
            self.hits += 1
            return entry[1]
        self.misses += 1
        y, u, v = self._levels(frame)
        planes = (self._fit(y, width, height), self._fit(u, width // 2, height // 2),
                  self._fit(v, width // 2, height // 2))
        for plane in planes:
            plane.flags.writeable = False
        self._entries[key] = (frame, planes)
        return planes


def _font_px(tile_h: int, share: float, low: int, high: int) -> int:
    """Font size in px for a tile ``tile_h`` px high: ``share`` of it, within [low, high]
    (CJK needs about 14 px to stay legible after H.264), but never over 40 % of a very
    flat tile."""
    return min(max(low, min(high, round(tile_h * share))), max(6, int(tile_h * 0.4)))


def _even_up(value: int) -> int:
    return value + (value & 1)


class Compositor:
    """Composes one view: a ``width`` x ``height`` px yuv420p canvas with one tile per
    classroom (see :mod:`syncclass.layout`).

    ``freeze_timeout_s`` is how long (seconds) a source may go without a new picture
    before it is shown dimmed with a "frozen" note; ``clock`` returns monotonic seconds
    and must be the clock of :attr:`SourceFrame.received_at`. Not thread-safe: one
    compositor is used by one thread at a time.
    """

    def __init__(
        self,
        width: int,
        height: int,
        tiles: Sequence[Tile],
        freeze_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str = "view",
        pool_size: int = 4,
    ) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"canvas must have positive even dimensions, got {width}x{height}")
        self.width = width
        self.height = height
        self.freeze_timeout_s = freeze_timeout_s
        self._clock = clock
        self._prefix = f"[{name}] "
        # The background (canvas black, dark grey tiles) as one contiguous I420 buffer,
        # copied into each output frame's planes before the pictures are drawn.
        self._background: Plane = np.empty((height * 3 // 2, width), dtype=np.uint8)
        self._bg_planes = self._split(self._background)
        self._pool: list[av.VideoFrame] = []
        self._pool_size = pool_size
        # Planes of the frame being composed (set during compose only).
        self._y, self._u, self._v = self._bg_planes
        self._tiles: tuple[Tile, ...] = ()
        self._overlays: set[int] = set()
        self._placements: dict[str, Rect] = {}
        self._sprites: dict[tuple[str, int, int], Plane] = {}
        self._state: dict[str, str] = {}
        self._badges: dict[str, tuple[str, float]] = {}
        self.freeze_timeouts: dict[str, float] = {}
        """Per-source freeze timeouts (s) overriding ``freeze_timeout_s``: a still
        courseware comes at one frame a second."""
        self.frames = 0
        """Frames composed."""
        self.last_compose_ms = 0.0
        """Wall time of the last :meth:`compose`, in milliseconds."""
        self.set_tiles(tiles)

    def _split(self, buffer: Plane) -> tuple[Plane, Plane, Plane]:
        w, h = self.width, self.height
        flat = buffer.reshape(-1)  # contiguous: a view
        quarter = (h // 2) * (w // 2)
        y = buffer[:h]
        u = flat[h * w : h * w + quarter].reshape(h // 2, w // 2)
        v = flat[h * w + quarter :].reshape(h // 2, w // 2)
        return y, u, v

    @property
    def tiles(self) -> tuple[Tile, ...]:
        """The current tiles."""
        return self._tiles

    @property
    def placements(self) -> dict[str, Rect]:
        """Content rect (canvas px) of each classroom shown in the last :meth:`compose`;
        missing sources are absent. Receivers crop these to find each picture."""
        return dict(self._placements)

    def set_tiles(self, tiles: Sequence[Tile]) -> None:
        """Replace the layout; raises ``ValueError`` if a tile leaves the canvas."""
        canvas = Rect(0, 0, self.width, self.height)
        for tile in tiles:
            if not canvas.contains(tile.rect) or tile.rect.w < 2 or tile.rect.h < 2:
                raise ValueError(
                    f"tile {tile.classroom_id!r} {tile.rect} is outside the "
                    f"{self.width}x{self.height} canvas"
                )
        self._tiles = tuple(tiles)
        # Tiles drawn over an earlier one (picture-in-picture) paint their own background.
        self._overlays = {
            j for j, tile in enumerate(self._tiles)
            if any(tile.rect.intersects(t.rect) for t in self._tiles[:j])
        }
        y, u, v = self._bg_planes
        y.fill(CANVAS_Y)
        u.fill(NEUTRAL_UV)
        v.fill(NEUTRAL_UV)
        for tile in self._tiles:
            r = tile.rect
            y[r.y : r.bottom, r.x : r.right] = TILE_Y
        self._state = {k: s for k, s in self._state.items() if k in self._tile_ids()}
        logger.debug("%stiles set: %s", self._prefix, [t.classroom_id for t in self._tiles])

    def set_badge(self, classroom_id: str, text: str, until: float) -> None:
        """Show ``text`` (any script, e.g. ``HAND UP`` or ``举手``) as a bright badge in
        the classroom's tile, below its timecode band, until monotonic time ``until`` (seconds, the
        compositor's clock). May be called from another thread than :meth:`compose`."""
        self._badges[classroom_id] = (text, until)

    def clear_badge(self, classroom_id: str) -> None:
        self._badges.pop(classroom_id, None)

    def badge(self, classroom_id: str) -> str | None:
        """The badge text shown now for a classroom, if any."""
        entry = self._badges.get(classroom_id)
        return entry[0] if entry is not None and entry[1] > self._clock() else None

    def _tile_ids(self) -> set[str]:
        return {t.classroom_id for t in self._tiles}

    def compose(
        self, sources: Mapping[str, SourceFrame | None], cache: ScaleCache | None = None
    ) -> av.VideoFrame:
        """Draw every tile from ``sources`` (classroom id → latest picture or None) and
        return the canvas as a yuv420p frame (pts unset). ``cache`` shares scaled
        pictures with the other compositors of this tick.

        The frame may be a recycled one, but only once the caller and every consumer
        dropped their references to it; keep it as long as needed."""
        start = time.perf_counter()
        now = self._clock()
        out = self._acquire_frame()
        self._y, self._u, self._v = _planes(out)
        for dst, src in zip((self._y, self._u, self._v), self._bg_planes, strict=True):
            np.copyto(dst, src)
        placements: dict[str, Rect] = {}
        # Pictures first, in draw order (a later tile may lie over the lower part of an
        # earlier one), then every label and badge, so that no picture covers a label.
        shown: list[tuple[Tile, Rect | None, str]] = []
        for index, tile in enumerate(self._tiles):
            source = sources.get(tile.classroom_id)
            over = index in self._overlays
            if source is None:
                self._set_state(tile, "missing")
                if over:
                    self._fill_tile(tile.rect)
                shown.append((tile, None, "missing"))
                continue
            frame = source.frame
            if frame.format.name not in ("yuv420p", "yuvj420p"):
                frame = frame.reformat(format="yuv420p")
            content = fit_rect(frame.width, frame.height, tile.rect)
            if over and content != tile.rect:
                self._fill_tile(tile.rect)  # its own bars, not the picture below
            self._draw_picture(frame, content, cache)
            placements[tile.classroom_id] = content
            timeout = self.freeze_timeouts.get(tile.classroom_id, self.freeze_timeout_s)
            if now - source.received_at > timeout:
                self._set_state(tile, "frozen")
                self._dim(content)
                shown.append((tile, content, "frozen"))
            else:
                self._set_state(tile, "live")
                shown.append((tile, content, "live"))
        for index, (tile, shown_rect, state) in enumerate(shown):
            above = [t.rect for t in self._tiles[index + 1 :] if t.rect.intersects(tile.rect)]
            if shown_rect is None:
                self._draw_text(tile, f"{tile.label}: no video", None, centre=True, above=above)
                continue
            content = shown_rect
            if state == "frozen":
                self._draw_text(tile, f"{tile.label}: frozen", content, centre=True,
                                above=above)
            else:
                self._draw_text(tile, tile.label, content, centre=False, above=above)
            badge = self._badges.get(tile.classroom_id)
            if badge is not None:
                if badge[1] > now:
                    self._draw_badge(tile, badge[0], content)
                else:
                    self._badges.pop(tile.classroom_id, None)
        self._placements = placements
        # Drop the plane views: they reference the frame and would keep it "in use".
        self._y, self._u, self._v = self._bg_planes
        self.frames += 1
        self.last_compose_ms = (time.perf_counter() - start) * 1000.0
        return out

    def _acquire_frame(self) -> av.VideoFrame:
        """A pooled output frame nobody else references, else a new one."""
        pool = self._pool
        for i in range(len(pool)):
            if sys.getrefcount(pool[i]) == _FREE_REFCOUNT:
                frame = pool[i]
                frame.pts = None
                frame.pict_type = PictureType.NONE
                return frame
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        if len(pool) < self._pool_size:
            pool.append(frame)
        else:
            logger.debug("%sall %d pooled frames in use", self._prefix, len(pool))
        return frame

    def _set_state(self, tile: Tile, state: str) -> None:
        old = self._state.get(tile.classroom_id)
        if old != state:
            self._state[tile.classroom_id] = state
            log = logger.warning if state == "frozen" else logger.debug
            log("%s%s: %s -> %s", self._prefix, tile.classroom_id, old, state)

    def _canvas_views(self, r: Rect) -> tuple[Plane, Plane, Plane]:
        cx, cy, cw, ch = r.x // 2, r.y // 2, r.w // 2, r.h // 2
        return (
            self._y[r.y : r.bottom, r.x : r.right],
            self._u[cy : cy + ch, cx : cx + cw],
            self._v[cy : cy + ch, cx : cx + cw],
        )

    def _draw_picture(self, frame: av.VideoFrame, content: Rect, cache: ScaleCache | None) -> None:
        dst = self._canvas_views(content)
        if cache is None:
            _scale_frame(frame, content.w, content.h, dst)
            return
        for target, plane in zip(dst, cache.scaled(frame, content.w, content.h), strict=True):
            target[...] = plane

    def _fill_tile(self, r: Rect) -> None:
        """Paint ``r`` with the tile background (dark grey, neutral chroma)."""
        y, u, v = self._canvas_views(r)
        y.fill(TILE_Y)
        u.fill(NEUTRAL_UV)
        v.fill(NEUTRAL_UV)

    def _dim(self, content: Rect) -> None:
        """Halve the contrast of the picture below its timecode band (luma towards black,
        chroma towards grey)."""
        band = _even_up(math.ceil(content.h * TIMECODE_BAND))
        if band >= content.h:
            return
        r = Rect(content.x, content.y + band, content.w, content.h - band)
        y, u, v = self._canvas_views(r)
        np.right_shift(y, 1, out=y)
        y += 8
        for c in (u, v):
            np.right_shift(c, 1, out=c)
            c += 64

    def _sprite(self, text: str, size_px: int, max_w: int) -> Plane | None:
        """A label image (luma, even size): text in any script (CJK font, see
        :mod:`syncclass.fonts`) on a dark box, shortened with '…' to ``max_w`` px.
        Rendered once per (text, size, width) and cached, then copied each frame."""
        key = (text, max_w, size_px)
        sprite = self._sprites.get(key)
        if sprite is not None:
            return sprite
        shown = fit_text(text, size_px, max_w - 2 * _LABEL_PAD)
        if shown is None:
            return None
        ink = render_text(shown, size_px)
        th, tw = ink.shape
        box_w = _even_up(tw + 2 * _LABEL_PAD)
        box_h = _even_up(th + 2 * _LABEL_PAD)
        if box_w > max_w:
            return None
        sprite = np.full((box_h, box_w), LABEL_BOX_Y, dtype=np.uint8)
        region = sprite[_LABEL_PAD : _LABEL_PAD + th, _LABEL_PAD : _LABEL_PAD + tw]
        region[...] = LABEL_BOX_Y + (ink.astype(np.uint16) * (LABEL_TEXT_Y - LABEL_BOX_Y)
                                     // 255).astype(np.uint8)
        if len(self._sprites) >= _SPRITE_CACHE_MAX:
            self._sprites.clear()
        self._sprites[key] = sprite
        return sprite

    def _draw_badge(self, tile: Tile, text: str, content: Rect) -> None:
        """A yellow box with dark text at the top right of ``content``, below its
        timecode band; skipped if it cannot fit."""
        r = tile.rect
        sprite = self._sprite(text, _font_px(r.h, 0.08, 16, 32), content.w - 2 * _LABEL_MARGIN)
        if sprite is None:
            return
        # The label sprite is light text on a dark box: invert it to dark on light.
        sprite = (BADGE_BOX_Y + LABEL_BOX_Y) - np.clip(sprite, LABEL_BOX_Y, BADGE_BOX_Y)
        sh, sw = sprite.shape
        x = (content.right - _LABEL_MARGIN - sw) // 2 * 2
        y = _even_up(content.y + math.ceil(content.h * TIMECODE_BAND)) + _LABEL_MARGIN
        if y + sh > content.bottom or x < content.x:
            return
        self._y[y : y + sh, x : x + sw] = sprite
        cx, cy = x // 2, y // 2
        self._u[cy : cy + sh // 2, cx : cx + sw // 2] = BADGE_U
        self._v[cy : cy + sh // 2, cx : cx + sw // 2] = BADGE_V

    def _draw_text(self, tile: Tile, text: str, content: Rect | None, *, centre: bool,
                   above: Sequence[Rect] = ()) -> None:
        """Draw ``text`` in a dark box at the bottom-left of ``tile`` (or its centre),
        never inside the timecode band of ``content`` and moved up out of the tiles
        ``above`` (drawn over this one); skipped if it cannot fit."""
        r = tile.rect
        sprite = self._sprite(text, _font_px(r.h, 0.06, 14, 28), r.w - 2 * _LABEL_MARGIN)
        if sprite is None:
            return
        sh, sw = sprite.shape
        top_limit = r.y
        if content is not None:
            top_limit = max(top_limit, content.y + _even_up(math.ceil(content.h * TIMECODE_BAND)))
        if centre:
            x = r.x + (r.w - sw) // 2 // 2 * 2
            y = r.y + (r.h - sh) // 2 // 2 * 2
        else:
            x = r.x + _LABEL_MARGIN
            y = r.bottom - _LABEL_MARGIN - sh
        moved = True
        while moved and y >= top_limit:
            moved = False
            for other in above:
                if y >= top_limit and Rect(x, y, sw, sh).intersects(other):
                    y = (other.y - _LABEL_MARGIN - sh) // 2 * 2  # strictly higher
                    moved = True
        y = max(y, top_limit)
        if y + sh > r.bottom or any(Rect(x, y, sw, sh).intersects(o) for o in above):
            return  # no room below the band: better no label than a broken timecode
        self._y[y : y + sh, x : x + sw] = sprite
        cx, cy = x // 2, y // 2
        self._u[cy : cy + sh // 2, cx : cx + sw // 2] = NEUTRAL_UV
        self._v[cy : cy + sh // 2, cx : cx + sw // 2] = NEUTRAL_UV
