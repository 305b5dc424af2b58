"""The capacity benchmark's load classroom: its replayed 720p H.264 is a real stream."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np

from syncclass.codec import VIDEO_TIME_BASE, annexb_nal_types
from syncclass.timecode import read_timecode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from load_classroom import LOOP_FRAMES, PrerecordedEncoder


def _frame(pts: int) -> av.VideoFrame:
    frame = av.VideoFrame(1280, 720, "yuv420p")
    frame.pts = pts
    frame.time_base = VIDEO_TIME_BASE
    return frame


def test_replayed_loop_decodes_as_moving_720p_without_timecode() -> None:
    enc = PrerecordedEncoder(1280, 720, 15.0, 1500, 2.0, 0.5)
    decoder = av.CodecContext.create("h264", "r")
    lumas = []
    for i in range(LOOP_FRAMES + 5):  # wraps around the loop once
        packets = enc.encode(_frame(i * 6000))
        assert len(packets) == 1 and packets[0].pts == i * 6000
        frames = decoder.decode(packets[0])
        for f in frames:
            assert (f.width, f.height) == (1280, 720)
            y = f.to_ndarray(format="gray")
            assert read_timecode(y) is None  # replayed pictures never give latency samples
            lumas.append(y)
    assert len(lumas) >= LOOP_FRAMES
    # The picture moves, and the loop repeats itself.
    assert np.abs(lumas[15].astype(int) - lumas[0]).mean() > 1.0
    assert np.array_equal(lumas[LOOP_FRAMES], lumas[0])
    assert enc.frames_encoded == LOOP_FRAMES + 5


def test_keyframe_request_restarts_at_the_idr() -> None:
    enc = PrerecordedEncoder(1280, 720, 15.0, 1500, 2.0, 0.0)
    first = enc.encode(_frame(0))[0]
    assert 5 in annexb_nal_types(bytes(first))  # IDR slice
    assert 5 not in annexb_nal_types(bytes(enc.encode(_frame(6000))[0]))
    assert enc.request_keyframe()
    again = enc.encode(_frame(12000))[0]
    assert bytes(again) == bytes(first) and again.pts == 12000
    # A decoder that joins at the restarted IDR decodes at once.
    late = av.CodecContext.create("h264", "r")
    assert len(late.decode(again)) == 1
