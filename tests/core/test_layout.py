"""Layout geometry: every layout fits the canvas, never overlaps and stays even-aligned."""

from __future__ import annotations

import itertools
import math

import pytest

from syncclass.layout import (
    Rect,
    Tile,
    courseware_layout,
    fit_rect,
    grid_layout,
    hidden_fraction,
    speaker_layout,
    unused_fraction,
)
from syncclass.timecode import TIMECODE_BAND

CANVASES = [(1280, 720), (1920, 1080), (640, 360), (1024, 768)]


def _ids(n: int) -> list[str]:
    return [f"room-{i}" for i in range(n)]


def _check_tiles(tiles: list[Tile], width: int, height: int, expected: list[str]) -> None:
    """Inside the canvas, even-aligned, each source once; a tile may lie over an earlier
    one only below that one's timecode band, and never over another small tile."""
    canvas = Rect(0, 0, width, height)
    assert sorted(t.classroom_id for t in tiles) == sorted(expected)
    for tile in tiles:
        r = tile.rect
        assert canvas.contains(r), (tile, width, height)
        assert r.w > 0 and r.h > 0
        assert r.x % 2 == r.y % 2 == r.w % 2 == r.h % 2 == 0
    for i, j in itertools.combinations(range(len(tiles)), 2):
        a, b = tiles[i].rect, tiles[j].rect  # b is drawn over a
        if not a.intersects(b):
            continue
        assert a.area > b.area, (tiles[i], tiles[j])
        assert b.y >= a.y + math.ceil(a.h * TIMECODE_BAND), (tiles[i], tiles[j])
        for k in range(j + 1, len(tiles)):  # small pictures never overlap each other
            assert not (tiles[k].rect.intersects(b) and tiles[k].rect.area >= b.area)
    for i in range(len(tiles)):
        assert hidden_fraction(tiles, i) <= 0.26, (i, tiles)  # 1/4 + rounding


@pytest.mark.parametrize(("width", "height"), CANVASES)
@pytest.mark.parametrize("n", range(17))
def test_grid_properties(width: int, height: int, n: int) -> None:
    ids = _ids(n)
    tiles = grid_layout(width, height, ids, {})
    _check_tiles(tiles, width, height, ids)
    assert grid_layout(width, height, ids, {}) == tiles  # deterministic


@pytest.mark.parametrize(("width", "height"), CANVASES)
@pytest.mark.parametrize("n", range(17))
def test_speaker_properties(width: int, height: int, n: int) -> None:
    ids = _ids(n)
    featured = ids[0] if ids else None
    tiles = speaker_layout(width, height, featured, ids[1:], {})
    _check_tiles(tiles, width, height, ids)
    assert speaker_layout(width, height, featured, ids[1:], {}) == tiles
    if n >= 1:
        big = tiles[0]
        assert big.featured and big.classroom_id == ids[0]
        assert sum(t.featured for t in tiles) == 1
        for tile in tiles[1:]:
            assert tile.rect.area < big.rect.area


@pytest.mark.parametrize(("width", "height"), CANVASES)
@pytest.mark.parametrize("n", range(17))
def test_courseware_properties(width: int, height: int, n: int) -> None:
    ids = _ids(n)
    tiles = courseware_layout(width, height, "slides", "teacher", ids, {})
    _check_tiles(tiles, width, height, ["slides", "teacher", *ids])
    assert tiles[0].classroom_id == "slides" and tiles[0].featured
    assert tiles[1].classroom_id == "teacher"
    for tile in tiles[1:]:
        assert tile.rect.area < tiles[0].rect.area


def _sample_layouts(n: int) -> dict[str, list[Tile]]:
    """The sample county's views at 1280x720 with n receiving classrooms, and the
    students' view while courseware is shown."""
    rooms = _ids(n)
    return {
        "teacher_view (grid)": grid_layout(1280, 720, rooms, {}),
        "students_view (speaker)": speaker_layout(1280, 720, "teacher", rooms, {}),
        "students_view (courseware)": courseware_layout(1280, 720, "slides", "teacher",
                                                        rooms, {}),
    }


@pytest.mark.parametrize("n", range(1, 9))
def test_sample_views_fill_the_picture(n: int) -> None:
    """Issue 21: no layout of the sample views leaves more than 5 % as background (the
    1 + 3 students' view left its bottom 180 rows black: 25 %)."""
    for kind, tiles in _sample_layouts(n).items():
        unused = unused_fraction(tiles, 1280, 720)
        assert unused <= 0.05, (kind, n, unused, tiles)


def test_unused_fraction_counts_gaps_and_letterbox() -> None:
    tiles = [Tile("a", "a", Rect(0, 0, 640, 360))]
    assert unused_fraction(tiles, 1280, 720) == pytest.approx(0.75)
    # A 4:3 picture in a 16:9 tile leaves bars: 1 - (960 * 720) / (1280 * 720).
    full = [Tile("a", "a", Rect(0, 0, 1280, 720))]
    assert unused_fraction(full, 1280, 720, {"a": (640, 480)}) == pytest.approx(0.25)
    # Overlapping pictures count once.
    pip = [*full, Tile("b", "b", Rect(960, 540, 320, 180))]
    assert unused_fraction(pip, 1280, 720) == 0.0
    assert hidden_fraction(pip, 0) == pytest.approx(1 / 16)
    assert unused_fraction([], 1280, 720) == 1.0


def test_speaker_720p_shapes() -> None:
    labels = {"a": "Room A"}
    # 1 + 3: the teacher fills the picture, the classrooms over its bottom row.
    tiles = speaker_layout(1280, 720, "a", ["b", "c", "d"], labels)
    assert tiles[0] == Tile("a", "Room A", Rect(0, 0, 1280, 720), featured=True)
    assert [t.rect for t in tiles[1:]] == [
        Rect(960, 540, 320, 180),
        Rect(640, 540, 320, 180),
        Rect(320, 540, 320, 180),
    ]
    assert [t.label for t in tiles[1:]] == ["b", "c", "d"]
    # 1 + 5: an exact tiling, featured 2/3 of the width.
    tiles = speaker_layout(1280, 720, "a", list("bcdef"), {})
    assert tiles[0].rect == Rect(0, 0, 852, 480)
    assert {t.rect.h for t in tiles[1:]} == {240}
    # 1 + 7: featured 960x540, seven 320x180 around it.
    tiles = speaker_layout(1280, 720, "a", list("bcdefgh"), {})
    assert tiles[0].rect == Rect(0, 0, 960, 540)
    assert {(t.rect.w, t.rect.h) for t in tiles[1:]} == {(320, 180)}
    # Many others: a finer strip (p = 8 cells a side), the others smaller.
    tiles = speaker_layout(1280, 720, "a", list("bcdefghijklmnop"), {})
    assert {(t.rect.w, t.rect.h) for t in tiles[1:]} == {(160, 90)}


def test_speaker_edge_cases() -> None:
    assert speaker_layout(1280, 720, "a", [], {}) == [
        Tile("a", "a", Rect(0, 0, 1280, 720), featured=True)
    ]
    # The featured source listed among the others is shown once.
    assert len(speaker_layout(1280, 720, "a", ["a", "b"], {})) == 2
    assert speaker_layout(1280, 720, None, ["a", "b", "c"], {}) == grid_layout(
        1280, 720, ["a", "b", "c"], {}
    )
    assert speaker_layout(1280, 720, None, [], {}) == []


def test_grid_examples() -> None:
    assert [t.rect for t in grid_layout(1280, 720, ["a"], {})] == [Rect(0, 0, 1280, 720)]
    four = grid_layout(1280, 720, list("abcd"), {})
    assert [t.rect for t in four] == [
        Rect(0, 0, 640, 360),
        Rect(640, 0, 640, 360),
        Rect(0, 360, 640, 360),
        Rect(640, 360, 640, 360),
    ]
    nine = grid_layout(1280, 720, list("abcdefghi"), {})
    assert {(t.rect.w, t.rect.h) for t in nine} <= {(426, 240), (428, 240)}
    two = grid_layout(1280, 720, list("ab"), {})
    assert two[0].rect == Rect(0, 0, 1280, 720)
    assert two[1].rect == Rect(852, 480, 428, 240)  # picture-in-picture


def test_bad_canvas() -> None:
    with pytest.raises(ValueError, match="even"):
        grid_layout(1279, 720, ["a"], {})


@pytest.mark.parametrize(
    ("src", "box"),
    [
        ((1280, 720), Rect(0, 0, 320, 180)),
        ((640, 480), Rect(960, 0, 320, 180)),
        ((1920, 1080), Rect(100, 50, 400, 400)),
        ((720, 1280), Rect(0, 0, 1280, 720)),
        ((1279, 719), Rect(2, 2, 958, 538)),
    ],
)
def test_fit_rect(src: tuple[int, int], box: Rect) -> None:
    r = fit_rect(src[0], src[1], box)
    assert box.contains(r)
    assert r.w == box.w or r.h == box.h  # touches two sides
    assert abs(r.w / r.h - src[0] / src[1]) < 0.02 * src[0] / src[1] + 2 / r.h
    # Centred within a pixel pair.
    assert abs((r.x - box.x) - (box.right - r.right)) <= 2
    assert abs((r.y - box.y) - (box.bottom - r.bottom)) <= 2


def test_rect_roundtrip_and_validation() -> None:
    r = Rect(2, 4, 6, 8)
    assert Rect.from_dict(r.to_dict()) == r
    tile = Tile("a", "Room A", r, True)
    assert Tile.from_dict(tile.to_dict()) == tile
    with pytest.raises(ValueError, match="even"):
        Rect(1, 0, 2, 2)
    with pytest.raises(ValueError, match="missing"):
        Rect.from_dict({"x": 0, "y": 0, "w": 2})
    with pytest.raises(ValueError, match="negative"):
        Rect(0, -2, 2, 2)
