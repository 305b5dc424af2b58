"""The per-view H.264 encoder: decodable output, IDR/SPS/PPS placement, keyframe policy."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np
import pytest

from syncclass.codec import (
    NAL_IDR,
    NAL_PPS,
    NAL_SLICE,
    NAL_SPS,
    VIDEO_TIME_BASE,
    H264Encoder,
    annexb_nal_types,
)
from syncclass.errors import InvalidStateError

W, H = 320, 240
FPS = 10
TICKS = 90000 // FPS


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_frame(index: int, width: int = W, height: int = H) -> av.VideoFrame:
    """A moving gradient with a bright square, so every frame differs."""
    yy, xx = np.mgrid[0:height, 0:width]
    y = ((xx + yy + index * 7) % 220 + 16).astype(np.uint8)
    s = (index * 5) % (width - 40)
    y[20:60, s : s + 40] = 235
    uv = np.full((height // 4, width), 128, np.uint8)
    frame = av.VideoFrame.from_ndarray(np.vstack([y, uv, uv]), format="yuv420p")
    frame.pts = index * TICKS
    return frame


def noisy_frame(index: int) -> av.VideoFrame:
    """Fresh noise every frame: more detail than any bitrate here can carry."""
    rng = np.random.default_rng(index)
    frame = av.VideoFrame.from_ndarray(
        rng.integers(0, 256, (H * 3 // 2, W), dtype=np.uint8), format="yuv420p"
    )
    frame.pts = index * TICKS
    return frame


def make_encoder(clock: FakeClock, **kwargs: float) -> H264Encoder:
    params: dict[str, float] = {
        "bitrate_kbps": 500,
        "keyframe_interval_s": 1.0,
        "keyframe_min_interval_s": 0.5,
    }
    params.update(kwargs)
    return H264Encoder(
        W,
        H,
        FPS,
        int(params["bitrate_kbps"]),
        params["keyframe_interval_s"],
        params["keyframe_min_interval_s"],
        clock=clock,
    )


def is_idr(packet: av.Packet) -> bool:
    return NAL_IDR in annexb_nal_types(bytes(packet))


def encode_range(enc: H264Encoder, clock: FakeClock, start: int, stop: int) -> list[av.Packet]:
    packets: list[av.Packet] = []
    for i in range(start, stop):
        clock.now = 100.0 + i / FPS
        out = enc.encode(make_frame(i))
        assert len(out) == 1  # zerolatency, no B-frames: one packet per frame, no delay
        packets += out
    return packets


def test_encode_decode_roundtrip() -> None:
    clock = FakeClock()
    enc = make_encoder(clock, keyframe_interval_s=10)
    packets = encode_range(enc, clock, 0, 30)
    first = annexb_nal_types(bytes(packets[0]))
    assert first[:2] == [NAL_SPS, NAL_PPS] and NAL_IDR in first
    assert packets[0].is_keyframe
    for i, packet in enumerate(packets):
        assert packet.pts == packet.dts == i * TICKS
        assert packet.time_base == VIDEO_TIME_BASE
    assert all(NAL_SLICE in annexb_nal_types(bytes(p)) for p in packets[1:])

    decoder = av.CodecContext.create("h264", "r")
    decoded = []
    for packet in packets:
        decoded += decoder.decode(av.Packet(bytes(packet)))
    decoded += decoder.decode(None)
    assert len(decoded) == 30
    assert all((f.width, f.height) == (W, H) for f in decoded)
    # Pixels survive (lossy, so roughly): the square of the last frame is bright.
    last = decoded[-1].to_ndarray(format="gray")
    s = (29 * 5) % (W - 40)
    assert last[30:50, s + 10 : s + 30].mean() > 200

    stats = enc.stats()
    assert stats["frames_in"] == stats["frames_encoded"] == 30
    assert stats["keyframes"] == 1
    assert stats["bytes_out"] == sum(p.size for p in packets)
    assert stats["total_encode_ms"] > 0 and enc.last_encode_ms > 0


def test_periodic_keyframes() -> None:
    clock = FakeClock()
    enc = make_encoder(clock, keyframe_interval_s=1.0)
    assert enc.keyint == 10
    packets = encode_range(enc, clock, 0, 30)
    assert [i for i, p in enumerate(packets) if is_idr(p)] == [0, 10, 20]
    for i in (10, 20):  # SPS/PPS repeated in-band with every IDR
        assert annexb_nal_types(bytes(packets[i]))[:2] == [NAL_SPS, NAL_PPS]
    assert enc.keyframes == 3


def test_request_keyframe_and_merge() -> None:
    clock = FakeClock()
    enc = make_encoder(clock, keyframe_interval_s=100, keyframe_min_interval_s=0.5)
    encode_range(enc, clock, 0, 10)  # t = 100.0 .. 100.9
    clock.now = 101.0
    assert enc.request_keyframe() is True
    assert enc.request_keyframe() is False  # already pending: merged
    (packet,) = enc.encode(make_frame(10))
    assert is_idr(packet) and packet.is_keyframe
    assert annexb_nal_types(bytes(packet))[:2] == [NAL_SPS, NAL_PPS]
    clock.now = 101.2  # within 0.5 s of the forced IDR: merged
    assert enc.request_keyframe() is False
    (packet,) = enc.encode(make_frame(11))
    assert not is_idr(packet)
    clock.now = 101.6  # past the minimum interval: honoured
    assert enc.request_keyframe() is True
    (packet,) = enc.encode(make_frame(12))
    assert is_idr(packet)
    assert enc.keyframe_requests == 4
    assert enc.keyframe_requests_merged == 2
    assert enc.keyframes == 3


def test_request_right_after_periodic_keyframe_is_merged() -> None:
    clock = FakeClock()
    enc = make_encoder(clock, keyframe_min_interval_s=0.5)
    encode_range(enc, clock, 0, 11)  # periodic IDR at frame 10 (t = 101.0)
    clock.now = 101.1
    assert enc.request_keyframe() is False


def test_bitrate_change_reopens_with_keyframe() -> None:
    clock = FakeClock()
    enc = make_encoder(clock, bitrate_kbps=200, keyframe_interval_s=100)
    low = encode_range(enc, clock, 0, 20)
    enc.bitrate_kbps = 1500
    assert enc.bitrate_kbps == 1500
    high = encode_range(enc, clock, 20, 40)
    assert is_idr(high[0]) and not any(is_idr(p) for p in high[1:])
    assert enc.reopens == 1 and enc.stats()["bitrate_kbps"] == 1500
    # The stream stays decodable across the reopen.
    decoder = av.CodecContext.create("h264", "r")
    frames = []
    for packet in low + high:
        frames += decoder.decode(av.Packet(bytes(packet)))
    frames += decoder.decode(None)
    assert len(frames) == 40
    rates: dict[int, float] = {}
    # Rate control follows the new target (noise saturates any bitrate; skip the IDRs).
    for kbps in (200, 1500):
        enc.bitrate_kbps = kbps
        sizes = [enc.encode(noisy_frame(i))[0].size for i in range(40, 60)]
        rates[kbps] = sum(sizes[5:]) * 8 * FPS / len(sizes[5:]) / 1000
    assert rates[1500] > 3 * rates[200]
    assert rates[200] < 200 * 1.5


def test_bad_frames_and_close() -> None:
    clock = FakeClock()
    enc = make_encoder(clock)
    with pytest.raises(ValueError, match="encoder is"):
        enc.encode(make_frame(0, 160, 120))
    rgb = av.VideoFrame(W, H, "rgb24")
    rgb.pts = 0
    with pytest.raises(ValueError, match="yuv420p"):
        enc.encode(rgb)
    enc.encode(make_frame(0))
    assert enc.flush() == []
    enc.close()
    with pytest.raises(InvalidStateError):
        enc.encode(make_frame(1))
    with pytest.raises(ValueError):
        H264Encoder(321, 240, FPS, 500, 1, 0.5)


def test_annexb_nal_types() -> None:
    data = b"\x00\x00\x00\x01\x67abc\x00\x00\x01\x68de\x00\x00\x00\x01\x65xyz"
    assert annexb_nal_types(data) == [NAL_SPS, NAL_PPS, NAL_IDR]
    assert annexb_nal_types(b"no start code") == []
    assert VIDEO_TIME_BASE == Fraction(1, 90000)


def test_periodic_keyframes_follow_media_time_when_frames_are_skipped() -> None:
    # Composition under load skips frames: every 3rd frame index is encoded. keyint counts
    # frames (FPS * 1 s), so without the media-time rule keyframes would come every 3 s.
    enc = make_encoder(FakeClock(), keyframe_interval_s=1.0)
    key_times = []
    for index in range(0, int(FPS * 6), 3):
        for packet in enc.encode(make_frame(index)):
            if is_idr(packet):
                key_times.append(index / FPS)
    gaps = [b - a for a, b in itertools.pairwise(key_times)]
    assert len(key_times) >= 5, key_times
    assert max(gaps) <= 1.0 + 3 / FPS, key_times
