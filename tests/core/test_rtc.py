"""Our aiortc seams (syncclass/rtc.py) against the pinned aiortc."""

from __future__ import annotations

import aioice.ice
import av
import numpy as np
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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _frames(jb: MarkerJitterBuffer, packets: list[RtpPacket]) -> tuple[list[bytes], bool]:
    """Feed ``packets``; the frames released (their data) and whether a PLI was asked."""
    out, pli = [], False
    for p in packets:
        flag, frame = jb.add(p)
        pli |= flag
        if frame is not None:
            out.append(frame.data)
    return out, pli


def _frame_packets(first_seq: int, index: int, n: int = 3) -> list[RtpPacket]:
    """Frame ``index`` (timestamp 3000 per frame at 15 fps) as ``n`` packets from
    ``first_seq``; data ``b"<index>:<k>"``."""
    return [_packet(first_seq + k, 3000 * index, k == n - 1, f"{index}:{k}".encode())
            for k in range(n)]


def test_hole_never_retransmitted_stops_blocking_after_the_wait() -> None:
    clock = _Clock()
    jb = MarkerJitterBuffer(capacity=128, is_video=True, hole_wait_s=0.5, clock=clock)
    frame0 = _frame_packets(0, 0)
    frame1 = _frame_packets(3, 1)
    assert _frames(jb, frame0) == ([b"0:0" + b"0:1" + b"0:2"], False)
    # Frame 1 loses its middle packet and the retransmission never comes; frames 2.. arrive.
    assert _frames(jb, [frame1[0], frame1[2]]) == ([], False)
    later = [p for i in range(2, 5) for p in _frame_packets(6 + 3 * (i - 2), i)]
    clock.now += 0.4  # still within the wait: everything behind the hole is held
    assert _frames(jb, later[:3]) == ([], False)
    clock.now += 0.2  # the wait is over: frame 1 is dropped, frame 2 comes out, PLI asked
    released, pli = _frames(jb, later[3:4])
    assert released == [b"2:0" + b"2:1" + b"2:2"] and pli
    assert jb.holes_skipped == 1
    # Frames behind are released one per arriving packet as before, with no further PLI.
    released, pli = _frames(jb, later[4:])
    assert released == [b"3:0" + b"3:1" + b"3:2", b"4:0" + b"4:1" + b"4:2"] and not pli
    assert _frames(jb, _frame_packets(15, 5)) == ([b"5:0" + b"5:1" + b"5:2"], False)


def test_hole_filled_by_a_retransmission_within_the_wait_loses_nothing() -> None:
    clock = _Clock()
    jb = MarkerJitterBuffer(capacity=128, is_video=True, hole_wait_s=0.5, clock=clock)
    frame0, frame1, frame2 = _frame_packets(0, 0), _frame_packets(3, 1), _frame_packets(6, 2)
    assert _frames(jb, [*frame0, frame1[0], frame1[2], *frame2])[0] == [b"0:00:10:2"]
    clock.now += 0.3
    released, pli = _frames(jb, [frame1[1]])  # the NACKed packet arrives
    assert released == [b"1:01:11:2"] and not pli
    assert _frames(jb, _frame_packets(9, 3)) == ([b"2:02:12:2", b"3:03:13:2"], False)
    assert jb.holes_skipped == 0


def test_slow_packets_without_a_hole_are_never_skipped() -> None:
    # A frame whose packets trickle in over longer than the wait (a thin link) is no hole.
    clock = _Clock()
    jb = MarkerJitterBuffer(capacity=128, is_video=True, hole_wait_s=0.5, clock=clock)
    packets = _frame_packets(0, 0, n=5)
    for p in packets[:-1]:
        assert jb.add(p) == (False, None)
        clock.now += 0.3
    pli, frame = jb.add(packets[-1])
    assert not pli and frame is not None and frame.data == b"0:00:10:20:30:4"
    assert jb.holes_skipped == 0


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


def test_use_opus_bitrate_sets_what_aiortc_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from aiortc.codecs.opus import OpusEncoder

    from syncclass.rtc import use_opus_bitrate

    monkeypatch.setattr(OpusEncoder, "__init__", OpusEncoder.__init__)  # restored after

    def kbps_of_one_second(encoder: OpusEncoder) -> float:
        t = np.arange(48000) / 48000
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000 + np.random.default_rng(1).normal(
            0, 2000, t.size)).astype(np.int16)
        total = 0
        for i in range(50):
            frame = av.AudioFrame.from_ndarray(pcm[None, i * 960:(i + 1) * 960],
                                               format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            payloads, _ = encoder.encode(frame)
            total += sum(len(p) for p in payloads)
        return total * 8 / 1000

    stock = kbps_of_one_second(OpusEncoder())
    use_opus_bitrate(32)
    ours = kbps_of_one_second(OpusEncoder())
    assert 20 < ours < 40 and stock > 70, (ours, stock)
    use_opus_bitrate(24)  # a second call replaces the first, it does not stack
    assert OpusEncoder().codec.bit_rate == 24000


@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_numpy_audio_level_equals_aiortcs(layout: str) -> None:
    from syncclass.rtc import AIORTC_AUDIO_LEVEL, audio_level_dbov

    channels = 1 if layout == "mono" else 2
    rng = np.random.default_rng(7)
    levels = set()
    for amplitude in (0, 1, 3, 30, 300, 3000, 12000, 32767):
        for _ in range(5):
            data = np.clip(rng.standard_normal((1, 960 * channels)) * amplitude,
                           -32768, 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
            frame.sample_rate = 48000
            ours = audio_level_dbov(frame)
            assert ours == AIORTC_AUDIO_LEVEL(frame), (amplitude, ours)
            levels.add(ours)
    full = av.AudioFrame.from_ndarray(np.full((1, 960 * channels), -32768, np.int16),
                                      format="s16", layout=layout)
    assert audio_level_dbov(full) == AIORTC_AUDIO_LEVEL(full) == 0
    assert -127 in levels and len(levels) >= 6  # silence and a spread of levels


def test_fast_audio_level_is_what_senders_call() -> None:
    import aiortc.rtcrtpsender

    from syncclass.rtc import audio_level_dbov, use_fast_audio_level

    use_fast_audio_level()
    # RTCRtpSender looks the function up on aiortc.rtp for each audio frame.
    assert aiortc.rtcrtpsender.rtp.compute_audio_level_dbov is audio_level_dbov


def _opus_tone_frames(hz: float, layout: str, count: int) -> list[bytes]:
    """``count`` 20 ms Opus frames of a ``hz`` tone, encoded by aiortc's own encoder."""
    from aiortc.codecs.opus import OpusEncoder

    encoder = OpusEncoder()
    channels = 1 if layout == "mono" else 2
    t = np.arange(960 * count) / 48000
    tone = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)
    payloads: list[bytes] = []
    for i in range(count):
        block = np.repeat(tone[i * 960:(i + 1) * 960], channels)
        frame = av.AudioFrame.from_ndarray(block[None, :], format="s16", layout=layout)
        frame.sample_rate, frame.pts = 48000, i * 960
        out, _ = encoder.encode(frame)
        payloads.extend(out)
    return payloads


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * 48000 / samples.size)


@pytest.mark.parametrize("layout", ["mono", "stereo"])
async def test_inline_audio_decoder_queues_mono_frames_and_passes_the_end(
        layout: str) -> None:
    import asyncio
    import threading

    from aiortc.codecs import get_capabilities
    from aiortc.jitterbuffer import JitterFrame

    from syncclass.rtc import InlineAudioDecoder, audio_frame_to_mono

    opus = next(c for c in get_capabilities("audio").codecs if c.name == "opus")
    output: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue()
    error = threading.Event()
    decoder = InlineAudioDecoder(output, error)
    payloads = _opus_tone_frames(440.0, layout, 25)
    for i, payload in enumerate(payloads):
        decoder.put((opus, JitterFrame(data=payload, timestamp=i * 960)))
    assert decoder.frames_decoded == output.qsize() == 25  # decoded as they were handed
    frames = [output.get_nowait() for _ in range(25)]
    assert all(f is not None and f.layout.name == "mono" and f.samples == 960
               for f in frames)
    assert [f.pts for f in frames if f is not None] == [i * 960 for i in range(25)]
    samples = np.concatenate([audio_frame_to_mono(f) for f in frames[5:] if f is not None])
    assert abs(_peak_hz(samples) - 440.0) < 5
    assert 4000 < np.abs(samples).max() < 9000  # the tone's level, not a doubled downmix

    decoder.put((opus, JitterFrame(data=b"\xff" * 3, timestamp=25 * 960)))  # malformed
    assert error.is_set() and decoder.decode_errors == 1 and output.empty()

    # The end of the stream goes to whoever waits in get() (aiortc's decoder thread).
    ended = threading.Event()
    waiter = threading.Thread(target=lambda: (decoder.get(), ended.set()))
    waiter.start()
    decoder.put(None)
    waiter.join(5)
    assert ended.is_set()


async def test_receivers_decode_inline_over_a_real_connection() -> None:
    """Two peers on loopback: the receiving one (with the seam installed) gets the tone as
    mono frames decoded by an InlineAudioDecoder, and closing ends the track and lets
    aiortc's decoder thread exit."""
    import asyncio
    import fractions
    import threading

    from aiortc import MediaStreamTrack, RTCRtpReceiver
    from aiortc.mediastreams import MediaStreamError

    from syncclass.rtc import (
        InlineAudioDecoder,
        audio_frame_to_mono,
        use_inline_audio_decoding,
        use_threaded_audio_decoding,
    )

    class Tone(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        async def recv(self) -> av.AudioFrame:
            await asyncio.sleep(0.02)
            t = (np.arange(960) + self.n * 960) / 48000
            block = (np.sin(2 * np.pi * 700 * t) * 8000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(block[None, :], format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, self.n * 960
            frame.time_base = fractions.Fraction(1, 48000)
            self.n += 1
            return frame

    use_host_addresses(["127.0.0.1"])
    use_inline_audio_decoding()
    sender_pc, receiver_pc = new_peer_connection(), new_peer_connection()
    received: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    receiver_pc.on("track", received.put_nowait)
    try:
        sender_pc.addTrack(Tone())
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        track = await asyncio.wait_for(received.get(), 10)
        frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(30)]
        receiver: RTCRtpReceiver = receiver_pc.getReceivers()[0]
        inline = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
        assert isinstance(inline, InlineAudioDecoder) and inline.frames_decoded >= 30
        assert all(isinstance(f, av.AudioFrame) and f.layout.name == "mono" for f in frames)
        samples = np.concatenate([audio_frame_to_mono(f) for f in frames[10:]])
        assert abs(_peak_hz(samples) - 700.0) < 5
    finally:
        await sender_pc.close()
        await receiver_pc.close()
        use_threaded_audio_decoding()
        use_host_addresses(None)
    with pytest.raises(MediaStreamError):
        while True:
            await asyncio.wait_for(track.recv(), 5)
    assert not [t for t in threading.enumerate() if t.name == "audio-decoder"]
