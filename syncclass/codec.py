"""One H.264 encoder per composed view (PyAV / libx264).

The mixer encodes each view once and sends the same packets to every classroom that
shows it, so this encoder is tuned for interactive latency: preset ultrafast, tune
zerolatency (no lookahead, no frame delay), baseline profile (no B-frames, so packets
come out in presentation order, one per input frame), annex-B output with SPS/PPS
repeated before every IDR (aiortc's H.264 packetizer splits annex-B NAL units, and a
receiver joining late or recovering from loss needs the parameter sets with the IDR),
and a VBV cap so that a keyframe does not burst far above the target bitrate.

Keyframes come periodically (every ``keyframe_interval_s``) and on request (a receiver's
PLI/FIR via :meth:`H264Encoder.request_keyframe`), with requests inside
``keyframe_min_interval_s`` of the last keyframe merged: one classroom losing packets
must not turn the shared stream into a stream of IDRs for everyone.

Thin links (:mod:`syncclass.adapt`): the target bitrate, the output size and the output
frame rate can change at run time (``bitrate_kbps`` setter, :meth:`H264Encoder.set_output`).
Input frames keep the size the encoder was created with; a smaller output is scaled in
:meth:`~H264Encoder.encode` (in the encoder's thread) and a lower frame rate drops input
frames by pts. Each change reopens the codec (an IDR): libx264 through PyAV does not take a
new bitrate on an open context.

Threading: :meth:`H264Encoder.encode` may run in a worker thread (PyAV releases the GIL
while encoding) while :meth:`~H264Encoder.request_keyframe`, :meth:`~H264Encoder.set_output`
and the ``bitrate_kbps`` setter are called from the event loop; they only set flags under
a lock, applied at the next ``encode``. ``encode`` itself must not be called concurrently
with itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from syncclass.errors import InvalidStateError

logger = logging.getLogger(__name__)

#: Time base of input frames and output packets: the 90 kHz RTP video clock.
VIDEO_TIME_BASE = Fraction(1, 90000)

#: H.264 NAL unit types (ITU-T H.264 table 7-1) the tests and receivers look for.
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

# libx264 slice threads (zerolatency uses sliced threads: one slice per thread, so no
# added frame delay). Measured at 1280x720, 2000 kbps on the 2-core dev box (median
# ms/frame, one encoder alone): threads=1 ≈ 7.5, threads=2 ≈ 4.7-5.2, threads=0 (auto)
# ≈ 5.0-6.2. With two view encoders running in parallel threads=1 has the better total
# throughput (7.8 vs 9.3 ms wall per frame pair), so a mixer with many views may pass 1.
DEFAULT_THREADS = 2

# VBV: the rate may peak at this multiple of the target over one buffer, and the buffer
# holds this many seconds at the target rate. A keyframe is at most about one buffer.
_VBV_MAXRATE_FACTOR = 1.2
_VBV_BUFFER_S = 0.5


def annexb_nal_types(data: bytes) -> list[int]:
    """The ``nal_unit_type`` (0..31) of each NAL unit in an annex-B byte stream, in order.

    NAL units are found by their 3- or 4-byte start codes (``00 00 01`` /
    ``00 00 00 01``). Data with no start code yields ``[]``.
    """
    types: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1:
        header = pos + 3
        if header < len(data):
            types.append(data[header] & 0x1F)
        pos = data.find(b"\x00\x00\x01", header)
    return types


class H264Encoder:
    """libx264 encoder for one view: yuv420p frames in, annex-B H.264 packets out.

    ``width`` × ``height`` in pixels (even), ``fps`` frames per second (nominal, for rate
    control and the keyframe interval), ``bitrate_kbps`` target in kbit/s,
    ``keyframe_interval_s`` the periodic IDR period in seconds, ``keyframe_min_interval_s``
    the shortest gap in seconds between a keyframe and a requested one. ``clock`` returns
    monotonic seconds (tests pass a fake one). ``threads`` is libx264's slice-thread count.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        bitrate_kbps: int,
        keyframe_interval_s: float,
        keyframe_min_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        threads: int = DEFAULT_THREADS,
        name: str = "view",
    ) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"encoder size must be positive and even, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if bitrate_kbps <= 0:
            raise ValueError(f"bitrate_kbps must be positive, got {bitrate_kbps}")
        if keyframe_interval_s <= 0 or keyframe_min_interval_s < 0:
            raise ValueError(
                "keyframe intervals must be positive, got "
                f"{keyframe_interval_s} s / {keyframe_min_interval_s} s"
            )
        self.width = width
        self.height = height
        self.fps = fps
        self.keyframe_interval_s = keyframe_interval_s
        self.keyframe_min_interval_s = keyframe_min_interval_s
        self.threads = threads
        self.out_width = width
        """Width of the encoded pictures, pixels (≤ ``width``; see :meth:`set_output`)."""
        self.out_height = height
        """Height of the encoded pictures, pixels."""
        self.out_fps = fps
        """Encoded frames per second (≤ ``fps``: input frames closer together are dropped)."""
        self._pending_output: tuple[int, int, float] | None = None
        self._last_out_pts: int | None = None
        self.frames_dropped = 0
        """Input frames dropped to keep to :attr:`out_fps`."""
        self.keyint = max(1, round(fps * keyframe_interval_s))
        self._last_key_pts: int | None = None
        """pts (1/90000) of the last keyframe: a view whose composition skips frames under
        load still gets a keyframe every ``keyframe_interval_s`` of media time, not only
        every ``keyint`` frames (recording segments and late joiners rely on it)."""
        self._clock = clock
        self._prefix = f"[{name}] "
        self._lock = threading.Lock()
        self._bitrate_kbps = bitrate_kbps
        self._pending_bitrate_kbps: int | None = None
        self._force_keyframe = False
        self._last_keyframe_at = float("-inf")
        self._closed = False
        self._codec = self._open_codec(bitrate_kbps)

        self.frames_in = 0
        """Frames passed to :meth:`encode`."""
        self.frames_encoded = 0
        """Frames that came out as packets."""
        self.keyframes = 0
        """Keyframe (IDR) packets produced, periodic, requested or after a reopen."""
        self.keyframe_requests = 0
        """Calls to :meth:`request_keyframe`."""
        self.keyframe_requests_merged = 0
        """Requests that did not force a new IDR (one was recent or already pending)."""
        self.bytes_out = 0
        """Total packet payload, in bytes."""
        self.last_encode_ms = 0.0
        """Wall time of the last :meth:`encode`, in milliseconds."""
        self.total_encode_ms = 0.0
        """Sum of :attr:`last_encode_ms` over all calls, in milliseconds."""
        self.reopens = 0
        """Times the codec context was reopened for a bitrate or output change."""

    def _open_codec(self, bitrate_kbps: int) -> Any:
        codec = av.CodecContext.create("libx264", "w")
        codec.width = self.out_width
        codec.height = self.out_height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.framerate = Fraction(self.out_fps).limit_denominator(1001)
        codec.bit_rate = bitrate_kbps * 1000
        codec.thread_count = self.threads
        maxrate = int(bitrate_kbps * _VBV_MAXRATE_FACTOR)
        bufsize = max(1, int(bitrate_kbps * _VBV_BUFFER_S))
        x264_params = ":".join(
            [
                f"keyint={self.keyint}",
                f"min-keyint={self.keyint}",
                "scenecut=0",
                "repeat-headers=1",
                "annexb=1",
                f"vbv-maxrate={maxrate}",
                f"vbv-bufsize={bufsize}",
            ]
        )
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "forced-idr": "1",
            "x264-params": x264_params,
        }
        codec.open()
        logger.debug(
            "%sopened libx264 %dx%d @ %s fps, %d kbps, keyint %d, threads %d",
            self._prefix,
            self.out_width,
            self.out_height,
            self.out_fps,
            bitrate_kbps,
            self.keyint,
            self.threads,
        )
        return codec

    @property
    def bitrate_kbps(self) -> int:
        """Target bitrate in kbit/s. Setting it reopens the codec at the next frame, which
        is then an IDR (the new context starts a new stream)."""
        with self._lock:
            return (
                self._pending_bitrate_kbps
                if self._pending_bitrate_kbps is not None
                else self._bitrate_kbps
            )

    @bitrate_kbps.setter
    def bitrate_kbps(self, value: int) -> None:
        if value <= 0:
            raise ValueError(f"bitrate_kbps must be positive, got {value}")
        with self._lock:
            if value == self._bitrate_kbps:
                self._pending_bitrate_kbps = None
                return
            old = self._pending_bitrate_kbps or self._bitrate_kbps
            self._pending_bitrate_kbps = value
        logger.debug("%sbitrate %d -> %d kbps", self._prefix, old, value)

    def set_output(self, width: int, height: int, fps: float) -> None:
        """Encode ``width`` x ``height`` pixels (even, at most the input size) at ``fps``
        frames/s (at most the input rate) from the next frame on (a reopen: an IDR)."""
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"output size must be positive and even, got {width}x{height}")
        if width > self.width or height > self.height:
            raise ValueError(f"output {width}x{height} exceeds the input "
                             f"{self.width}x{self.height}")
        if not 0 < fps <= self.fps:
            raise ValueError(f"output fps must be in (0, {self.fps}], got {fps}")
        with self._lock:
            if (width, height, fps) == (self.out_width, self.out_height, self.out_fps):
                self._pending_output = None
                return
            self._pending_output = (width, height, fps)
        logger.debug("%soutput -> %dx%d @ %s fps", self._prefix, width, height, fps)

    def request_keyframe(self) -> bool:
        """Ask for an IDR on the next frame (e.g. after a receiver's PLI).

        Returns True if the next frame will be forced to IDR, False if the request was
        merged: a keyframe is already pending, or one was forced or produced less than
        ``keyframe_min_interval_s`` ago.
        """
        now = self._clock()
        with self._lock:
            self.keyframe_requests += 1
            recent = now - self._last_keyframe_at < self.keyframe_min_interval_s
            if self._force_keyframe or recent:
                self.keyframe_requests_merged += 1
                return False
            self._force_keyframe = True
            self._last_keyframe_at = now
        logger.debug("%skeyframe requested", self._prefix)
        return True

    def encode(self, frame: av.VideoFrame) -> list[av.Packet]:
        """Encode one frame; returns its packets (normally exactly one).

        ``frame`` is yuv420p at the configured size with ``pts`` in ``VIDEO_TIME_BASE``
        (1/90000 s) ticks, increasing. Packets carry that pts/dts and time base.
        Raises ``ValueError`` on a wrong size or format and ``InvalidStateError`` after
        :meth:`close`.
        """
        if self._closed:
            raise InvalidStateError("Cannot encode: encoder is closed")
        if frame.width != self.width or frame.height != self.height:
            raise ValueError(
                f"frame is {frame.width}x{frame.height}, encoder is {self.width}x{self.height}"
            )
        if frame.format.name not in ("yuv420p", "yuvj420p"):
            raise ValueError(f"frame format must be yuv420p, got {frame.format.name}")
        if frame.pts is None:
            raise ValueError("frame has no pts")
        start = time.perf_counter()
        with self._lock:
            self.frames_in += 1
            new_output = self._pending_output
            out_fps = new_output[2] if new_output is not None else self.out_fps
            if (out_fps < self.fps and self._last_out_pts is not None
                    and frame.pts - self._last_out_pts < 90000 / out_fps * 0.9):
                self.frames_dropped += 1  # keep pending flags for the next frame encoded
                return []
            new_bitrate = self._pending_bitrate_kbps
            self._pending_bitrate_kbps = None
            self._pending_output = None
            force = self._force_keyframe or new_bitrate is not None or new_output is not None
            self._force_keyframe = False
        in_pts: int = frame.pts
        self._last_out_pts = in_pts
        if new_bitrate is not None or new_output is not None:
            if new_output is not None:
                self.out_width, self.out_height, self.out_fps = new_output
                self.keyint = max(1, round(self.out_fps * self.keyframe_interval_s))
            self._reopen(new_bitrate if new_bitrate is not None else self._bitrate_kbps)
        if (frame.width, frame.height) != (self.out_width, self.out_height):
            frame = frame.reformat(width=self.out_width, height=self.out_height,
                                   format="yuv420p")
            frame.pts = in_pts
        saved_type = frame.pict_type
        frame.time_base = VIDEO_TIME_BASE
        period = round(self.keyframe_interval_s * 90000)
        if self._last_key_pts is not None and in_pts - self._last_key_pts >= period:
            force = True
        if force:
            frame.pict_type = PictureType.I
        try:
            packets: list[av.Packet] = self._codec.encode(frame)
        finally:
            frame.pict_type = saved_type
        return self._account(packets, start)

    def flush(self) -> list[av.Packet]:
        """Drain the encoder (no more frames will come); then :meth:`close` it."""
        if self._closed:
            return []
        start = time.perf_counter()
        packets: list[av.Packet] = self._codec.encode(None)
        return self._account(packets, start)

    def close(self) -> None:
        """Release the codec; further :meth:`encode` calls raise."""
        self._closed = True

    def _reopen(self, bitrate_kbps: int) -> None:
        # Drain the old context so its last frame is not lost (zerolatency: normally none).
        old = self._codec
        self._codec = self._open_codec(bitrate_kbps)
        try:
            old.encode(None)
        except av.error.FFmpegError:
            logger.debug("%sflushing the old codec context failed", self._prefix)
        self._bitrate_kbps = bitrate_kbps
        self.reopens += 1
        logger.info("%sreopened encoder: %dx%d @ %s fps, %d kbps", self._prefix,
                    self.out_width, self.out_height, self.out_fps, bitrate_kbps)

    def _account(self, packets: list[av.Packet], start: float) -> list[av.Packet]:
        keyframe = False
        for packet in packets:
            # libx264 already reports these in its time base (1/90000); set them explicitly
            # so every consumer sees the same values whatever the codec did.
            pts = packet.pts
            packet.pts = pts
            packet.dts = pts
            packet.time_base = VIDEO_TIME_BASE
            self.bytes_out += packet.size
            if packet.is_keyframe:
                keyframe = True
                self.keyframes += 1
                self._last_key_pts = pts
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        with self._lock:
            self.frames_encoded += len(packets)
            if keyframe:
                self._last_keyframe_at = max(self._last_keyframe_at, self._clock())
            self.last_encode_ms = elapsed_ms
            self.total_encode_ms += elapsed_ms
        return packets

    def stats(self) -> dict[str, float]:
        """Counters as a dict (for metrics and logs); times in ms, sizes in bytes."""
        with self._lock:
            return {
                "frames_in": self.frames_in,
                "frames_encoded": self.frames_encoded,
                "keyframes": self.keyframes,
                "keyframe_requests": self.keyframe_requests,
                "keyframe_requests_merged": self.keyframe_requests_merged,
                "bytes_out": self.bytes_out,
                "last_encode_ms": self.last_encode_ms,
                "total_encode_ms": self.total_encode_ms,
                "mean_encode_ms": self.total_encode_ms / self.frames_in if self.frames_in else 0.0,
                "bitrate_kbps": self._bitrate_kbps,
                "reopens": self.reopens,
                "out_width": self.out_width,
                "out_height": self.out_height,
                "out_fps": self.out_fps,
                "frames_dropped": self.frames_dropped,
            }
