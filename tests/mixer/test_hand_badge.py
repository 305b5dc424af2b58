"""Hand raise: the compositor's badge overlay, the protocol message."""

from __future__ import annotations

import av
import numpy as np
import pytest

from mixer.compose import BADGE_BOX_Y, Compositor, SourceFrame
from syncclass.errors import ProtocolError
from syncclass.layout import grid_layout
from syncclass.protocol import RaiseHand, parse_client_message


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def grey_frame(w: int = 640, h: int = 360, y: int = 90) -> av.VideoFrame:
    f = av.VideoFrame(w, h, "yuv420p")
    for plane, v in zip(f.planes, (y, 128, 128), strict=True):
        np.frombuffer(memoryview(plane), np.uint8)[:] = v
    return f


def yellow_pixels(frame: av.VideoFrame, rect: tuple[int, int, int, int]) -> int:
    x, y, w, h = rect
    rgb = frame.to_ndarray(format="rgb24")[y : y + h, x : x + w].astype(int)
    return int(((rgb[..., 0] > 180) & (rgb[..., 1] > 160) & (rgb[..., 2] < 90)).sum())


def test_badge_shows_until_it_expires() -> None:
    clock = Clock()
    tiles = grid_layout(1280, 720, ["a", "b"], {"a": "A", "b": "B"})
    comp = Compositor(1280, 720, tiles, 1.5, clock)
    src = {"a": SourceFrame(grey_frame(), clock.t), "b": SourceFrame(grey_frame(), clock.t)}
    rect = {t.classroom_id: (t.rect.x, t.rect.y, t.rect.w, t.rect.h) for t in tiles}
    comp.set_badge("a", "HAND UP", until=clock.t + 5)
    out = comp.compose(src)
    assert yellow_pixels(out, rect["a"]) > 1000
    assert yellow_pixels(out, rect["b"]) == 0
    assert comp.badge("a") == "HAND UP" and comp.badge("b") is None
    # The timecode band of the picture is untouched.
    pa = comp.placements["a"]
    band = out.to_ndarray(format="gray")[pa.y : pa.y + int(pa.h * 0.08), pa.x : pa.right]
    assert not (band > BADGE_BOX_Y - 20).any()
    del out
    clock.t += 6
    src = {k: SourceFrame(v.frame, clock.t) for k, v in src.items()}
    out = comp.compose(src)
    assert yellow_pixels(out, rect["a"]) == 0
    assert comp.badge("a") is None


def test_raise_hand_message() -> None:
    msg = parse_client_message('{"type": "raise_hand"}')
    assert isinstance(msg, RaiseHand)
    with pytest.raises(ProtocolError):
        parse_client_message('{"type": "raise_hand", "who": 1}')
