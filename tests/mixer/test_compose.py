"""The YUV420 compositor: pictures land in their content rects, placeholders, freezing,
the timecode band left alone, and shared scaling."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from mixer.compose import (
    NEUTRAL_UV,
    TILE_Y,
    Compositor,
    ScaleCache,
    SourceFrame,
)
from syncclass.layout import Rect, Tile, fit_rect, grid_layout, speaker_layout
from syncclass.timecode import TIMECODE_BAND

W, H = 1280, 720
BAND_Y = 200  # luma of the sources' timecode band in these tests


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def solid(
    width: int, height: int, y: int, u: int, v: int, band_y: int | None = None
) -> av.VideoFrame:
    """A yuv420p picture of one colour, optionally with its top TIMECODE_BAND at ``band_y``."""
    luma = np.full((height, width), y, np.uint8)
    if band_y is not None:
        luma[: math.ceil(height * TIMECODE_BAND)] = band_y
    cu = np.full((height // 4, width), u, np.uint8)
    cv = np.full((height // 4, width), v, np.uint8)
    return av.VideoFrame.from_ndarray(np.vstack([luma, cu, cv]), format="yuv420p")


def planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert frame.format.name == "yuv420p"
    h, w = frame.height, frame.width
    flat = frame.to_ndarray().reshape(-1)
    q = (h // 2) * (w // 2)
    y = flat[: h * w].reshape(h, w)
    u = flat[h * w : h * w + q].reshape(h // 2, w // 2)
    v = flat[h * w + q :].reshape(h // 2, w // 2)
    return y, u, v


def pixel(frame: av.VideoFrame, x: int, y: int) -> tuple[int, int, int]:
    yp, up, vp = planes(frame)
    return int(yp[y, x]), int(up[y // 2, x // 2]), int(vp[y // 2, x // 2])


COLOURS = {
    "a": (1280, 720, (180, 90, 200)),
    "b": (640, 480, (120, 160, 60)),
    "c": (1920, 1080, (60, 200, 100)),
    "d": (320, 240, (150, 40, 140)),
}


def sources_at(now: float) -> dict[str, SourceFrame | None]:
    return {
        cid: SourceFrame(solid(w, h, *yuv), received_at=now) for cid, (w, h, yuv) in COLOURS.items()
    }


def test_solid_sources_land_in_content_rects() -> None:
    clock = FakeClock()
    tiles = speaker_layout(W, H, "a", ["b", "c", "d"], {"a": "A"})
    comp = Compositor(W, H, tiles, freeze_timeout_s=1.0, clock=clock)
    out = comp.compose(sources_at(clock.now))
    assert (out.width, out.height, out.format.name) == (W, H, "yuv420p")
    placements = comp.placements
    assert set(placements) == set(COLOURS)
    for tile in tiles:
        w, h, yuv = COLOURS[tile.classroom_id]
        content = placements[tile.classroom_id]
        assert content == fit_rect(w, h, tile.rect)
        assert pixel(out, content.x + content.w // 2, content.y + content.h // 2) == yuv
        assert pixel(out, content.x + 2, content.y + 2) == yuv  # top-left corner too
    # "b" is 4:3 in a 16:9 tile: dark grey letterbox bars beside it.
    b_tile = tiles[1].rect
    assert placements["b"].x > b_tile.x
    assert pixel(out, b_tile.x + 1, b_tile.y + b_tile.h // 2) == (TILE_Y, NEUTRAL_UV, NEUTRAL_UV)
    # The label box sits at the bottom-left of the tile, with neutral chroma.
    a_tile = tiles[0].rect
    yl, ul, vl = pixel(out, a_tile.x + 6, a_tile.bottom - 6)
    assert yl < 60 and ul == vl == NEUTRAL_UV
    # The canvas is reused: a second compose gives an equal, distinct frame.
    again = comp.compose(sources_at(clock.now))
    assert again is not out
    assert np.array_equal(again.to_ndarray(), out.to_ndarray())


def test_missing_source_placeholder() -> None:
    clock = FakeClock()
    tiles = grid_layout(W, H, ["a", "b"], {"a": "Room A", "b": "Room B"})
    comp = Compositor(W, H, tiles, freeze_timeout_s=1.0, clock=clock)
    srcs = sources_at(clock.now)
    srcs["b"] = None
    out = comp.compose(srcs)
    assert set(comp.placements) == {"a"}
    y, u, _v = planes(out)
    r = tiles[1].rect
    region = y[r.y : r.bottom, r.x : r.right]
    # Mostly dark grey background, with a placeholder text box in the middle.
    assert np.median(region) == TILE_Y
    middle = region[r.h // 2 - 8 : r.h // 2 + 8]
    assert middle.max() > 200 and middle.min() < 30
    assert np.all(u[r.y // 2 : r.bottom // 2, r.x // 2 : r.right // 2] == NEUTRAL_UV)
    # A source absent from the mapping is treated the same.
    del srcs["b"]
    comp.compose(srcs)
    assert set(comp.placements) == {"a"}


def test_frozen_after_timeout() -> None:
    clock = FakeClock()
    tiles = grid_layout(W, H, ["a", "b"], {"a": "A", "b": "B"})
    comp = Compositor(W, H, tiles, freeze_timeout_s=1.0, clock=clock)
    srcs = sources_at(clock.now)
    clock.now += 0.9
    live = comp.compose(srcs)
    ca = comp.placements["a"]
    probe = (ca.x + ca.w // 8, ca.y + ca.h // 2)
    assert pixel(live, *probe) == COLOURS["a"][2]
    # "b" keeps getting fresh frames; "a" stops.
    clock.now += 0.2
    assert srcs["b"] is not None
    srcs["b"] = SourceFrame(srcs["b"].frame, received_at=clock.now)
    frozen = comp.compose(srcs)
    y0, u0, v0 = COLOURS["a"][2]
    assert pixel(frozen, *probe) == (y0 // 2 + 8, u0 // 2 + 64, v0 // 2 + 64)
    assert "a" in comp.placements  # the last picture is still shown
    cb = comp.placements["b"]
    assert pixel(frozen, cb.x + cb.w // 8, cb.y + cb.h // 2) == COLOURS["b"][2]
    # A "frozen" note in the middle of the tile.
    y, _, _ = planes(frozen)
    assert y[ca.y + ca.h // 2 - 6 : ca.y + ca.h // 2 + 6, ca.x : ca.right].max() > 200


def _check_band(frame: av.VideoFrame, content: Rect, yuv: tuple[int, int, int]) -> None:
    """The timecode band of ``content`` holds exactly the source's band pixels."""
    y, u, v = planes(frame)
    rows = math.floor(content.h * TIMECODE_BAND) - 1  # last row may blend when scaled
    assert rows >= 1
    band = y[content.y : content.y + rows, content.x : content.right]
    assert np.all(band == BAND_Y), content
    crows = rows // 2
    cu = u[content.y // 2 : content.y // 2 + crows, content.x // 2 : content.right // 2]
    cv = v[content.y // 2 : content.y // 2 + crows, content.x // 2 : content.right // 2]
    assert np.all(cu == yuv[1]) and np.all(cv == yuv[2])


@pytest.mark.parametrize("n", [1, 2, 4, 5, 8, 16])
@pytest.mark.parametrize("speaker", [False, True])
def test_no_drawing_in_timecode_band(n: int, speaker: bool) -> None:
    clock = FakeClock()
    ids = [f"room-{i}" for i in range(n)]
    labels = {cid: f"Classroom number {i} with a long name" for i, cid in enumerate(ids)}
    if speaker:
        tiles = speaker_layout(W, H, ids[0], ids[1:], labels)
    else:
        tiles = grid_layout(W, H, ids, labels)
    comp = Compositor(W, H, tiles, freeze_timeout_s=1.0, clock=clock)
    yuv = (100, 110, 150)
    srcs: dict[str, SourceFrame | None] = {
        cid: SourceFrame(solid(1280, 720, *yuv, band_y=BAND_Y), clock.now - (i % 2) * 5)
        for i, cid in enumerate(ids)  # every other source frozen
    }
    out = comp.compose(srcs)
    for cid in ids:
        _check_band(out, comp.placements[cid], yuv)


def test_label_pushed_below_band_in_a_flat_tile() -> None:
    """A label that would start inside the band is moved below it (or dropped)."""
    clock = FakeClock()
    tile = Tile("a", "abcdefgh", Rect(0, 0, 96, 24))
    comp = Compositor(160, 90, [tile], freeze_timeout_s=1.0, clock=clock)
    yuv = (100, 110, 150)
    for received in (clock.now, clock.now - 5):  # live label, then frozen placeholder
        out = comp.compose({"a": SourceFrame(solid(640, 480, *yuv, band_y=BAND_Y), received)})
        content = comp.placements["a"]
        assert content == Rect(32, 0, 32, 24)
        _check_band(out, content, yuv)
        y, _, _ = planes(out)
        assert (y[: tile.rect.h, : tile.rect.w] == 24).any()  # the label box was drawn


def test_scale_cache_shared_between_views() -> None:
    clock = FakeClock()
    tiles = grid_layout(W, H, ["a", "b", "c", "d"], {})
    first = Compositor(W, H, tiles, freeze_timeout_s=1.0, clock=clock)
    second = Compositor(W, H, list(reversed(tiles)), freeze_timeout_s=1.0, clock=clock)
    srcs = sources_at(clock.now)
    cache = ScaleCache()
    one = first.compose(srcs, cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 4, 4)
    two = second.compose(srcs, cache)
    assert (cache.hits, cache.misses) == (4, 4)
    assert np.array_equal(one.to_ndarray(), two.to_ndarray())
    # Same pixels as without a cache.
    plain = Compositor(W, H, tiles, freeze_timeout_s=1.0, clock=clock).compose(srcs)
    assert np.array_equal(plain.to_ndarray(), one.to_ndarray())
    # Next tick: cleared, and new frame objects miss.
    cache.clear()
    assert len(cache) == 0
    first.compose(sources_at(clock.now), cache)
    assert cache.misses == 8


def test_set_tiles_and_validation() -> None:
    clock = FakeClock()
    comp = Compositor(W, H, grid_layout(W, H, ["a"], {}), freeze_timeout_s=1.0, clock=clock)
    srcs = sources_at(clock.now)
    comp.compose(srcs)
    assert set(comp.placements) == {"a"}
    comp.set_tiles(grid_layout(W, H, ["c", "d"], {}))
    comp.compose(srcs)
    assert set(comp.placements) == {"c", "d"}
    with pytest.raises(ValueError, match="outside"):
        comp.set_tiles([Tile("a", "a", Rect(1200, 0, 320, 180))])
    with pytest.raises(ValueError, match="even"):
        Compositor(1279, 720, [], freeze_timeout_s=1.0)
    # Non-yuv420p sources are converted.
    rgb = av.VideoFrame.from_ndarray(np.full((72, 128, 3), 255, np.uint8), format="rgb24")
    comp.compose({"c": SourceFrame(rgb, clock.now), "d": None})
    c = comp.placements["c"]
    out = comp.compose({"c": SourceFrame(rgb, clock.now)})
    assert pixel(out, c.x + c.w // 2, c.y + c.h // 2)[0] > 230


def test_output_frames_are_recycled_only_when_released() -> None:
    clock = FakeClock()
    tiles = grid_layout(W, H, ["a"], {})
    comp = Compositor(W, H, tiles, freeze_timeout_s=1.0, clock=clock)
    red = {"a": SourceFrame(solid(W, H, 80, 90, 240), clock.now)}
    blue = {"a": SourceFrame(solid(W, H, 40, 240, 110), clock.now)}
    held = comp.compose(red)
    held.pts = 1234
    snapshot = held.to_ndarray().copy()
    second = comp.compose(blue)
    assert second is not held
    assert np.array_equal(held.to_ndarray(), snapshot)  # a held frame is never rewritten
    second_id = id(second)
    del second
    third = comp.compose(blue)
    assert id(third) == second_id  # released: reused
    assert third.pts is None
    assert pixel(third, W // 2, H // 2) == (40, 240, 110)


@pytest.mark.parametrize("frozen", [False, True])
def test_timecode_readable_in_every_tile(frozen: bool) -> None:
    """Receivers find each source via ``placements`` and read its timecode, even from a
    small speaker-layout tile and from a frozen (dimmed) picture."""
    from syncclass.timecode import Timecode, paint_timecode, read_timecode

    clock = FakeClock()
    ids = ["a", "b", "c", "d", "e"]
    comp = Compositor(W, H, speaker_layout(W, H, "a", ids[1:], {}), 1.0, clock=clock)
    srcs: dict[str, SourceFrame | None] = {}
    for i, cid in enumerate(ids):
        frame = solid(1280, 720, 90 + 20 * i, 128, 128)
        y, _, _ = _writable_planes(frame)
        paint_timecode(y, Timecode(capture_ms=1_700_000_000_000 + i, source=i))
        srcs[cid] = SourceFrame(frame, clock.now - (5 if frozen else 0))
    out = comp.compose(srcs)
    y, _, _ = planes(out)
    for i, cid in enumerate(ids):
        r = comp.placements[cid]
        tc = read_timecode(np.ascontiguousarray(y[r.y : r.bottom, r.x : r.right]))
        assert tc == Timecode(capture_ms=1_700_000_000_000 + i, source=i), cid


def _writable_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = []
    for p in frame.planes:
        buf = np.frombuffer(memoryview(p), np.uint8)
        out.append(buf.reshape(p.height, p.line_size)[:, : p.width])
    return out[0], out[1], out[2]


def test_scale_cache_halves_a_picture_once_for_all_its_sizes() -> None:
    """A receiving classroom is in both views at different sizes: the full-size picture is
    halved once per tick, and every size is pixel for pixel what scaling alone gives."""
    from mixer.compose import _planes, _scale_frame

    rng = np.random.default_rng(3)
    frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (720, 1280, 3), np.uint8),
                                       format="bgr24").reformat(format="yuv420p")
    cache = ScaleCache()
    sizes = [(426, 240), (256, 144), (320, 180), (1280, 720), (640, 360), (960, 540)]
    for w, h in sizes:
        got = cache.scaled(frame, w, h)
        want = _scale_frame(frame, w, h, None)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), (w, h)
        assert got[0].shape == (h, w) and got[1].shape == (h // 2, w // 2)
        assert not any(p.flags.writeable for p in got)
    # 1280x720 -> 640x360 -> 320x180 is the deepest any size needed: two levels per plane.
    assert cache.halvings == 2 * 3
    # A full-size tile is a copy, never the decoded frame's own memory.
    full = cache.scaled(frame, 1280, 720)[0]
    assert not np.shares_memory(full, _planes(frame)[0])
    cache.clear()
    cache.scaled(frame, 256, 144)
    assert cache.halvings == 2 * 3 + 2 * 3  # cleared with the tick: halved again
