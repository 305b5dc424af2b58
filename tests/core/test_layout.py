"""Layout geometry: every layout fits the canvas, never overlaps and stays even-aligned."""

from __future__ import annotations

import itertools

import pytest

from syncclass.layout import Rect, Tile, fit_rect, grid_layout, speaker_layout

CANVASES = [(1280, 720), (1920, 1080), (640, 360), (1024, 768)]


def _ids(n: int) -> list[str]:
    return [f"room-{i}" for i in range(n)]


def _check_tiles(tiles: list[Tile], width: int, height: int, expected: list[str]) -> None:
    canvas = Rect(0, 0, width, height)
    assert sorted(t.classroom_id for t in tiles) == sorted(expected)
    for tile in tiles:
        r = tile.rect
        assert canvas.contains(r), (tile, width, height)
        assert r.w > 0 and r.h > 0
        assert r.x % 2 == r.y % 2 == r.w % 2 == r.h % 2 == 0
    for a, b in itertools.combinations(tiles, 2):
        assert not a.rect.intersects(b.rect), (a, b)


@pytest.mark.parametrize(("width", "height"), CANVASES)
@pytest.mark.parametrize("n", range(17))
def test_grid_properties(width: int, height: int, n: int) -> None:
    ids = _ids(n)
    tiles = grid_layout(width, height, ids, {})
    _check_tiles(tiles, width, height, ids)
    assert len({(t.rect.w, t.rect.h) for t in tiles}) <= 1  # all cells equal
    for tile in tiles:
        assert abs(tile.rect.w / tile.rect.h - 16 / 9) < 0.03
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


def test_speaker_720p_shapes() -> None:
    labels = {"a": "Room A"}
    tiles = speaker_layout(1280, 720, "a", ["b", "c", "d"], labels)
    assert tiles[0] == Tile("a", "Room A", Rect(0, 0, 960, 540), featured=True)
    assert [t.rect for t in tiles[1:]] == [
        Rect(960, 0, 320, 180),
        Rect(960, 180, 320, 180),
        Rect(960, 360, 320, 180),
    ]
    assert [t.label for t in tiles[1:]] == ["b", "c", "d"]
    # More others: a bottom row too, the featured tile keeps its size.
    tiles = speaker_layout(1280, 720, "a", list("bcdefg"), {})
    assert tiles[0].rect == Rect(0, 0, 960, 540)
    assert {t.rect.y for t in tiles[4:]} == {540}
    # Many others: the featured tile shrinks.
    tiles = speaker_layout(1280, 720, "a", list("bcdefghijklmnop"), {})
    assert tiles[0].rect.w < 960


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
    three = grid_layout(1280, 720, list("abc"), {})
    assert three[2].rect.x == 320  # incomplete last row is centred


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
