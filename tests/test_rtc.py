"""Our aiortc seams (syncclass/rtc.py) against the pinned aiortc."""

from __future__ import annotations

import aioice.ice
import av
import pytest
from aiortc import RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket, RtpPacket

from syncclass.rtc import (
    AudioJitterBuffer,
    MarkerJitterBuffer,
    PacketQueueTrack,
    install_low_latency_jitter_buffers,
    new_peer_connection,
    prefer_codec,
    route_keyframe_requests,
    use_host_addresses,
)


def test_use_host_addresses_round_trip() -> None:
    use_host_addresses(["127.0.0.1", "::1"])
    try:
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1",
                                                                                "::1"]
    finally:
        use_host_addresses(None)
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


async def test_pli_reaches_our_encoder() -> None:
    pc = new_peer_connection()
    try:
        track = PacketQueueTrack("video")
        sender = pc.addTrack(track)
        calls: list[int] = []
        route_keyframe_requests(sender, lambda: calls.append(1))
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc)
        await sender._handle_rtcp_packet(pli)
        assert calls == [1]
    finally:
        await pc.close()


async def test_prefer_codec_offers_only_h264() -> None:
    pc = new_peer_connection()
    try:
        pc.addTrack(PacketQueueTrack("video"))
        for t in pc.getTransceivers():
            prefer_codec(t, "video/H264")
        offer = await pc.createOffer()
        video = [line for line in offer.sdp.splitlines() if line.startswith("a=rtpmap")]
        assert video and all("H264" in line or "rtx" in line for line in video), video
    finally:
        await pc.close()
    assert RTCRtpSender.getCapabilities("video").codecs


async def test_packet_queue_drops_oldest_and_reports() -> None:
    track = PacketQueueTrack("video", maxsize=3, name="t")
    overflows: list[int] = []
    track.on_overflow = lambda: overflows.append(1)
    packets = []
    for i in range(5):
        p = av.Packet(bytes([i]) * 10)
        packets.append(p)
        track.put(p)
    assert track.dropped == 2 and len(overflows) == 2
    got = [bytes(await track.recv())[0] for _ in range(3)]
    assert got == [2, 3, 4]
    track.stop()
    track.put(av.Packet(b"x"))  # ignored once stopped
    assert track.dropped == 2


def _packet(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # type: ignore[attr-defined]
    return p


def test_marker_jitter_buffer_releases_frame_at_marker() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    assert jb.add(_packet(10, 1000, False, b"a"))[1] is None
    assert jb.add(_packet(11, 1000, False, b"b"))[1] is None
    frame = jb.add(_packet(12, 1000, True, b"c"))[1]
    assert frame is not None and frame.data == b"abc" and frame.timestamp == 1000
    # Out of order within the next frame: released once the hole is filled.
    assert jb.add(_packet(15, 2000, True, b"f"))[1] is None
    assert jb.add(_packet(13, 2000, False, b"d"))[1] is None
    frame = jb.add(_packet(14, 2000, False, b"e"))[1]
    assert frame is not None and frame.data == b"def"


def test_marker_jitter_buffer_lost_marker_falls_back_to_next_frame() -> None:
    jb = MarkerJitterBuffer(capacity=128, is_video=True)
    jb.add(_packet(1, 10, False, b"x"))
    jb.add(_packet(2, 10, False, b"y"))  # the marker packet (3) never comes...
    frame = jb.add(_packet(3, 20, False, b"z"))[1]  # ...the next frame begins instead
    assert frame is not None and frame.data == b"xy" and frame.timestamp == 10


def test_stock_jitter_buffer_waits_for_next_frame() -> None:
    # What MarkerJitterBuffer fixes (aiortc 1.16): the complete frame is held back.
    jb = JitterBuffer(capacity=128, is_video=True)
    jb.add(_packet(10, 1000, False, b"a"))
    assert jb.add(_packet(11, 1000, True, b"b"))[1] is None
    assert jb.add(_packet(12, 2000, False, b"c"))[1] is not None


def test_install_low_latency_jitter_buffers() -> None:
    import aiortc.rtcrtpreceiver

    original = aiortc.rtcrtpreceiver.JitterBuffer
    try:
        install_low_latency_jitter_buffers()
        factory = aiortc.rtcrtpreceiver.JitterBuffer
        assert isinstance(factory(capacity=512, is_video=True), MarkerJitterBuffer)
        assert isinstance(factory(capacity=16, prefetch=4), AudioJitterBuffer)
        install_low_latency_jitter_buffers(video=False, audio=False)
        assert type(aiortc.rtcrtpreceiver.JitterBuffer(capacity=16)) is JitterBuffer
    finally:
        aiortc.rtcrtpreceiver.JitterBuffer = original  # type: ignore[misc]


def _feed(jb: JitterBuffer, seqs: list[int]) -> list[int | None]:
    out = []
    for seq in seqs:
        frame = jb.add(_packet(seq, seq * 960, True, bytes([seq % 256])))[1]
        out.append(None if frame is None else frame.timestamp // 960)
    return out


def test_audio_jitter_buffer_releases_in_order_without_prefetch() -> None:
    jb = AudioJitterBuffer()
    assert _feed(jb, [1, 2, 3]) == [1, 2, 3]


def test_audio_jitter_buffer_recovers_after_loss() -> None:
    jb = AudioJitterBuffer(hole_wait=2)
    assert _feed(jb, [1, 2]) == [1, 2]
    # 3 is lost: after two later packets the hole is given up, then no backlog remains.
    assert _feed(jb, [4, 5]) == [None, 4]
    # One frame (20 ms) behind at most, and it stays bounded by max_backlog.
    assert _feed(jb, [6, 7, 8]) == [5, 6, 7]
    assert _feed(jb, [10, 11, 12]) == [8, 10, 11]  # 9 lost: given up, no growth
    assert jb.frames_lost == 2
    stock = JitterBuffer(capacity=16, prefetch=4)
    released = _feed(stock, [1, 2, *range(4, 20)])
    assert released[:6] == [None] * 6  # stock: prefetch of 4, then stuck at the hole


def test_audio_jitter_buffer_bounds_backlog() -> None:
    jb = AudioJitterBuffer(hole_wait=5, max_backlog=2)
    assert _feed(jb, [1]) == [1]
    assert _feed(jb, [3, 4, 5, 6]) == [None, None, None, None]  # waiting for 2
    assert _feed(jb, [2]) == [5]  # 2,3,4 dropped as backlog, 5 played (6 next)
    assert jb.frames_dropped == 3


async def test_recv_newest_passes_over_a_backlog_and_keeps_the_end() -> None:
    from aiortc.mediastreams import MediaStreamError
    from aiortc.rtcrtpreceiver import RemoteStreamTrack

    from syncclass.rtc import recv_newest

    track = RemoteStreamTrack("video")
    frames = []
    for i in range(4):  # a backlog: the decoder ran ahead of a busy reader
        f = av.VideoFrame(16, 16, "yuv420p")
        f.pts = i
        frames.append(f)
        track._queue.put_nowait(f)
    frame, skipped = await recv_newest(track)
    assert frame.pts == 3 and skipped == 3
    f = av.VideoFrame(16, 16, "yuv420p")
    f.pts = 4
    track._queue.put_nowait(f)
    track._queue.put_nowait(None)  # the track ends after it
    frame, skipped = await recv_newest(track)
    assert frame.pts == 4 and skipped == 0
    with pytest.raises(MediaStreamError):  # the end of the track was kept
        await recv_newest(track)
