"""The mixer's own Opus encoder for each listener's N-1 mix."""

from __future__ import annotations

import av
import numpy as np
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from mixer.media import AUDIO_FRAME, MixEncoder, _encode_mixes
from syncclass.rtc import PacketQueueTrack


def test_mix_packets_decode_to_the_tone_at_the_blocks_clock() -> None:
    enc = MixEncoder(32)
    t = np.arange(AUDIO_FRAME * 50) / 48000
    tone = (8000 * np.sin(2 * np.pi * 700 * t)).astype(np.int16)
    decoder = OpusDecoder()  # what an agent's aiortc receiver uses
    out = []
    start = 123 * AUDIO_FRAME
    for i in range(50):
        pts = start + i * AUDIO_FRAME
        packets = enc.encode(tone[i * AUDIO_FRAME:(i + 1) * AUDIO_FRAME], pts)
        assert len(packets) == 1 and packets[0].pts == pts
        # aiortc packs it as is; the RTP timestamp follows the mix's clock.
        payloads, timestamp = OpusEncoder().pack(packets[0])
        assert timestamp == pts and len(payloads) == 1
        for frame in decoder.decode(JitterFrame(payloads[0], timestamp)):
            out.append(frame.to_ndarray().reshape(-1, 2)[:, 0])
    pcm = np.concatenate(out[10:]).astype(np.float64)  # past the codec's start-up
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    peak_hz = np.argmax(spectrum) * 48000 / pcm.size
    assert abs(peak_hz - 700) < 10, peak_hz
    assert 20 * np.log10(np.sqrt(np.mean(pcm ** 2)) / (8000 / np.sqrt(2))) > -3  # level kept



def test_mix_bitrate_is_the_configured_one() -> None:
    rng = np.random.default_rng(3)
    speechlike = (rng.standard_normal(AUDIO_FRAME * 100) * 3000).astype(np.int16)
    for kbps in (16, 32):
        enc = MixEncoder(kbps)
        size = sum(enc.encode(speechlike[i * AUDIO_FRAME:(i + 1) * AUDIO_FRAME],
                              i * AUDIO_FRAME)[0].size for i in range(100))
        measured_kbps = size * 8 / 2.0 / 1000  # 100 blocks = 2 s
        assert 0.7 * kbps < measured_kbps < 1.3 * kbps, (kbps, measured_kbps)



class _Broken(MixEncoder):
    def encode(self, samples: np.ndarray, pts: int) -> list[av.Packet]:
        raise av.FFmpegError(22, "Invalid argument")


def test_a_failing_listener_loses_its_block_only() -> None:
    block = np.zeros(AUDIO_FRAME, np.int16)
    t1, t2, t3 = (PacketQueueTrack("audio", name=n) for n in "abc")
    out = _encode_mixes([(t1, MixEncoder(32), block), (t2, _Broken(32), block),
                         (t3, MixEncoder(32), block)], 0)
    assert [track for track, _ in out] == [t1, t3]
    assert all(packet.size > 0 for _, packet in out)
