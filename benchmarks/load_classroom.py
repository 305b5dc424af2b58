"""A receiving classroom whose 1280x720 camera was encoded ahead of time (capacity runs).

On a 2-core machine nine real agents (camera drawing + libx264 each) leave no CPU for the
mixer, so a 1 + 8 lesson at 720p cannot be measured with real agents alone
(``capacity.py`` setup ``faithful``). This is ``syncclass agent`` with one change: the
camera's H.264 is encoded once at start-up (:data:`LOOP_FRAMES` frames of the synthetic
720p picture at the county's bitrate and keyframe settings) and then sent in a loop, so
the mixer receives, decodes and scales a real 720p stream while this process spends neither
camera nor encoder CPU. The view it receives is depacketized but not decoded (a real
classroom decodes it on its own PC, not on the mixer's): the process reports no received
frame rate or latency. Everything else is the real agent: signaling, WebRTC (ICE, DTLS,
SRTP, RTCP, NACK/PLI), audio (synthetic tone, Opus both ways). A keyframe request
restarts the loop at its IDR.

The looped pictures carry no timecode (the band is black, which the reader rejects), so
latency figures never come from them.

    python -m benchmarks.load_classroom agent --config C --classroom ID [agent options]

(``capacity.py --setups prerecorded`` starts these through ``LocalDeployment``.)
"""

from __future__ import annotations

import sys
import time
from typing import Any

import av
from aiortc import rtcrtpreceiver
from aiortc.codecs import get_decoder as _aiortc_get_decoder

import edge_agent.agent as agent_module
from edge_agent.sources import SyntheticVideoSource
from syncclass import cli
from syncclass.codec import VIDEO_TIME_BASE, H264Encoder
from syncclass.timecode import timecode_band_height

LOOP_FRAMES = 60
"""Frames in the loop (4 s at 15 fps): the picture moves and a periodic IDR is inside."""


class PrerecordedEncoder(H264Encoder):
    """An :class:`H264Encoder` whose output was encoded at construction and is replayed.

    ``encode`` ignores the frame's pixels and returns the loop's next packet with the
    frame's pts; bitrate and output-size changes (adaptation) are not applied.
    """

    def __init__(self, width: int, height: int, fps: float, *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(width, height, fps, *args, **kwargs)
        source = SyntheticVideoSource(width, height, fps, "prerecorded", source=255,
                                      sync_period_s=None)
        band = timecode_band_height(height)
        step = round(90000 / fps)
        loop: list[bytes] = []
        while len(loop) < LOOP_FRAMES:
            frame = source.produce(time.time())
            frame.planes[0].update(_blank_band(frame, band))
            frame.pts = len(loop) * step
            loop.extend(bytes(p) for p in super().encode(frame))
        self._loop = loop
        self._next = 0
        # Counters describe the replay, not the encoding ahead of time.
        self.frames_in = self.frames_encoded = self.keyframes = self.bytes_out = 0
        self.total_encode_ms = 0.0

    def encode(self, frame: av.VideoFrame) -> list[av.Packet]:
        with self._lock:  # request_keyframe sets the flag from the event loop's thread
            restart = self._force_keyframe
            self._force_keyframe = False
            self.frames_in += 1
            if restart:
                self._next = 0
                self.keyframes += 1
                self._last_keyframe_at = self._clock()
            data = self._loop[self._next]
            self._next = (self._next + 1) % len(self._loop)
            self.frames_encoded += 1
            self.bytes_out += len(data)
        packet = av.Packet(data)
        packet.pts = packet.dts = frame.pts
        packet.time_base = VIDEO_TIME_BASE
        return [packet]


def _blank_band(frame: av.VideoFrame, band: int) -> bytes:
    """The luma plane with its top ``band`` rows black (no readable timecode)."""
    plane = frame.planes[0]
    data = bytearray(bytes(plane))
    data[: band * plane.line_size] = bytes([16]) * (band * plane.line_size)
    return bytes(data)


class _UndecodedVideo:
    """Stands in for aiortc's video decoder: counts complete frames, outputs none."""

    def __init__(self) -> None:
        self.frames = 0

    def decode(self, encoded_frame: Any) -> list[av.VideoFrame]:
        self.frames += 1
        return []


def _get_decoder(codec: Any) -> Any:
    if codec.mimeType.lower().startswith("video/"):
        return _UndecodedVideo()
    return _aiortc_get_decoder(codec)


_BLANK: dict[tuple[int, int], av.VideoFrame] = {}


async def _blank_camera(self: SyntheticVideoSource) -> av.VideoFrame:
    """``SyntheticVideoSource.read`` without drawing: paced frames of one reused picture
    (its pixels are never encoded; :class:`PrerecordedEncoder` replays its loop)."""
    pts = await self._pacer.wait()
    frame = _BLANK.get((self.width, self.height))
    if frame is None:
        frame = _BLANK[self.width, self.height] = av.VideoFrame(self.width, self.height,
                                                                 "yuv420p")
    frame.pts = pts
    frame.time_base = VIDEO_TIME_BASE
    self.frames += 1
    return frame


def main(argv: list[str]) -> int:
    agent_module.H264Encoder = PrerecordedEncoder  # type: ignore[misc]
    SyntheticVideoSource.read = _blank_camera  # type: ignore[method-assign]
    rtcrtpreceiver.get_decoder = _get_decoder
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
