"""Small, tested adaptations of aiortc shared by the mixer and the agents.

Written against aiortc 1.16 / aioice 0.13 (pinned in pyproject). Each hook touches one
documented seam and is checked at import of the peer:

- :func:`use_host_addresses` replaces aioice's interface enumeration, which never offers
  127.0.0.1, so a whole lesson can run on one machine.
- :func:`route_keyframe_requests` sends a receiver's PLI/FIR to our shared encoder: aiortc
  only sets a private flag that it ignores when the track hands it encoded packets.
- :func:`observe_rtcp_feedback` hands a sender's REMB, loss and RTT to our bitrate
  adaptation (:mod:`syncclass.adapt`): aiortc only gives REMB to its own encoder, which a
  track of pre-encoded packets does not use.
- :func:`prefer_codec` restricts a transceiver to one codec (we send pre-encoded H.264).
- :class:`MarkerJitterBuffer` hands a video frame to the decoder as soon as its last packet
  (RTP marker bit) arrives; stock aiortc waits for the first packet of the *next* frame,
  one frame interval (67 ms at 15 fps) of extra latency at every hop.
- :class:`AudioJitterBuffer` keeps audio delay minimal and recovers after losses.
  :func:`install_low_latency_jitter_buffers` makes aiortc's receivers use both.
- :func:`use_fast_audio_level` computes the RFC 6465 audio level every audio sender puts
  in each packet with numpy instead of aiortc's per-sample Python loop.
- :func:`use_inline_audio_decoding` decodes each received Opus frame to mono as it
  arrives, on the event loop, instead of in a decoder thread per audio receiver.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import queue
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
import aiortc.codecs.opus
import aiortc.rtcicetransport
import aiortc.rtcrtpreceiver
import aiortc.rtp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)
from aiortc.utils import uint16_add, uint16_gt

from .adapt import LinkFeedback
from .errors import ConfigError, ProtocolError
from .lipsync import SenderClock, ntp_to_seconds

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
_original_get_host_addresses = aioice.ice.get_host_addresses


def use_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer exactly these host addresses as ICE candidates (``None`` restores aioice's)."""
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def new_peer_connection(ice_servers: Sequence[RTCIceServer] = ()) -> RTCPeerConnection:
    """A peer connection with only these ICE servers (TURN relays handed out by the mixer);
    none by default: aiortc would default to a public STUN server, which a school LAN and
    this project's tests cannot reach. aiortc 1.16 uses one TURN URL (the first it can
    use) and one STUN URL; see ``edge_agent/turn.py`` for how an agent picks it."""
    return RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))


_original_connection_kwargs = aiortc.rtcicetransport.connection_kwargs
_turn_ssl_context: ssl.SSLContext | None = None


def turn_ssl_context() -> ssl.SSLContext:
    """The TLS client context used for ``turns:`` servers (see :func:`use_turn_ca_file`)."""
    return _turn_ssl_context or ssl.create_default_context()


def use_turn_ca_file(path: str | None) -> None:
    """Verify ``turns:`` servers' certificates against the CA certificate(s) in ``path``
    (PEM; ``None``: the system trust store).

    aiortc passes ``turn_ssl=True`` to aioice, which hands it to
    ``loop.create_connection(ssl=...)``: a default context that cannot trust a county's own
    CA or the self-signed certificate of ``scripts/turnserver.sh``. aioice takes an
    ``SSLContext`` there as well, so the kwargs aiortc builds get ours instead."""
    global _turn_ssl_context
    if path is None:
        _turn_ssl_context = None
        aiortc.rtcicetransport.connection_kwargs = _original_connection_kwargs
        return
    try:
        ctx = ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mixer.turn.ca_file: cannot load {path!r}: {exc}") from None
    _turn_ssl_context = ctx

    def connection_kwargs(servers: list[RTCIceServer]) -> dict[str, Any]:
        kwargs = _original_connection_kwargs(servers)
        if kwargs.get("turn_ssl") is True:
            kwargs["turn_ssl"] = ctx
        return kwargs

    aiortc.rtcicetransport.connection_kwargs = connection_kwargs


def selected_ice_pair(pc: RTCPeerConnection) -> dict[str, str] | None:
    """Candidate types of the pair ICE nominated (``{"local": "relay", "remote": "host"}``),
    ``None`` before one is nominated. Reads aioice's nominated pair: aiortc's getStats has
    no candidate-pair report."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.sender.transport
        connection = getattr(getattr(transport, "transport", None), "_connection", None)
        nominated = getattr(connection, "_nominated", None)
        if nominated:
            pair = nominated[min(nominated)]
            return {"local": pair.local_candidate.type, "remote": pair.remote_candidate.type}
    return None


def route_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], Any]) -> None:
    """Call ``callback`` when the remote receiver asks ``sender`` for a keyframe."""
    if not hasattr(sender, "_send_keyframe"):
        raise RuntimeError("aiortc changed: RTCRtpSender._send_keyframe is gone")
    sender._send_keyframe = callback  # type: ignore[method-assign]


def prefer_codec(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    """Negotiate only ``mime_type`` (e.g. ``video/H264``) on this transceiver."""
    caps = RTCRtpSender.getCapabilities(transceiver.kind)
    codecs = [c for c in caps.codecs if c.mimeType.lower() == mime_type.lower()]
    if not codecs:
        raise RuntimeError(f"aiortc offers no {mime_type} codec")
    transceiver.setCodecPreferences(codecs)
    # After setRemoteDescription aiortc has already negotiated the offer's codecs and
    # answers with those, ignoring later preferences; a browser offers VP8 first, so the
    # pre-encoded H.264 would go out under a VP8 payload type. Narrow the negotiated list.
    negotiated = getattr(transceiver, "_codecs", None)
    if negotiated:
        keep = [c for c in negotiated if c.mimeType.lower() == mime_type.lower()]
        if not keep:
            raise ProtocolError("bad_sdp", f"the offer has no {mime_type} for this "
                                           f"{transceiver.kind}")
        payload_types = {c.payloadType for c in keep}
        rtx = [c for c in negotiated
               if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") in payload_types]
        transceiver._codecs = keep + rtx


VIDEO_HOLE_WAIT_S = 0.5
"""How long a hole in the video packet sequence may hold back the frames behind it, s.

aiortc's receiver NACKs a missing packet once, when it notices the gap, and never again;
if the retransmission is lost too (a thin link's queue overflowing drops both), stock
aiortc holds every later frame until ``capacity`` (128) packets have arrived behind the
hole: about 1 s at 720p but 5-6 s at 200 kbit/s, with one such stall per unrecovered hole
(measured on a 512 kbit/s emulated link: the mixer decoded nothing of the classroom for
17 s while its link had stopped dropping packets after 6 s). A retransmission comes one
round trip after the gap, so a hole still open after this long (longer than the 100 ms +
100 ms + queueing round trip of our lossy-link fault test) will not be filled."""


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, but a video frame is complete at its marker-bit packet, and a
    hole no retransmission filled stops holding later frames after ``hole_wait_s``.

    Frames are still assembled only from a contiguous run of packets starting at the
    buffer's origin (so a hole waits for its NACK retransmission, as before); a frame
    whose marker packet was lost is released, as in stock aiortc, when the next frame's
    first packet arrives. When a hole has blocked the origin for ``hole_wait_s`` (judged
    by ``clock``, monotonic seconds, as packets arrive), the incomplete frame is dropped,
    assembly resumes at the next certain frame start (a packet whose predecessor is
    present and ends a frame), and the next :meth:`add` asks for a keyframe (PLI): the
    frames after the hole reference a picture the decoder never got.
    """

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False, *,
                 hole_wait_s: float = VIDEO_HOLE_WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(capacity, prefetch, is_video)
        self.hole_wait_s = hole_wait_s
        self._clock = clock
        self._hole_since: float | None = None
        self._want_keyframe = False
        self._newest: int | None = None
        self.holes_skipped = 0
        """Holes given up on (each dropped at least one frame and asked for a keyframe)."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._newest is None or uint16_gt(seq, self._newest):
            self._newest = seq
        pli, frame = super().add(packet)
        if self._want_keyframe:
            self._want_keyframe = False
            pli = True
        return pli, frame

    def _slot(self, count: int) -> RtpPacket | None:
        assert self._origin is not None
        return self._packets[(self._origin + count) % self._capacity]

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if not self._is_video or self._origin is None:
            return super()._remove_frame(sequence_number)
        while True:
            packets: list[RtpPacket] = []
            timestamp: int | None = None
            for count in range(self._capacity):
                packet = self._slot(count)
                if packet is None:
                    if not self._skip_hole(count):
                        return None
                    break  # the origin moved past the hole: assemble from there
                if timestamp is None:
                    timestamp = packet.timestamp
                elif packet.timestamp != timestamp:
                    self.remove(count)
                    self._hole_since = None
                    return _assemble(packets, timestamp)
                packets.append(packet)
                if packet.marker:
                    self.remove(count + 1)
                    self._hole_since = None
                    return _assemble(packets, timestamp)
            else:
                return None

    def _skip_hole(self, count: int) -> bool:
        """Slot ``count`` (from the origin) is empty: give up on it if it is a hole (later
        packets are here) that has waited ``hole_wait_s`` and a frame certainly starts
        after it. True if the origin moved past it."""
        assert self._origin is not None and self._newest is not None
        newest = uint16_add(self._newest, -self._origin)
        if newest <= count or newest >= self._capacity:  # the next packet is not here yet
            self._hole_since = None
            return False
        now = self._clock()
        if self._hole_since is None:
            self._hole_since = now
        if now - self._hole_since < self.hole_wait_s:
            return False
        for i in range(count + 1, newest + 1):
            before, packet = self._slot(i - 1), self._slot(i)
            if (packet is not None and before is not None
                    and (before.marker or before.timestamp != packet.timestamp)):
                self.remove(i)
                self._hole_since = None
                self._want_keyframe = True
                self.holes_skipped += 1
                return True
        return False


def _assemble(packets: list[RtpPacket], timestamp: int) -> JitterFrame:
    # aiortc stores each packet's depayloaded bytes in the ad-hoc attribute ``_data``.
    data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
    return JitterFrame(data=data, timestamp=timestamp)


class PacketQueueTrack(MediaStreamTrack):
    """A track whose ``recv`` hands out items put into a bounded queue.

    Used for pre-encoded video (``av.Packet``) and for mixed audio (``av.AudioFrame``).
    When the queue is full the oldest item is dropped and counted: a slow consumer must
    never hold back the producer.
    """

    def __init__(self, kind: str, maxsize: int = 30, name: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.name = name
        self._queue: asyncio.Queue[av.Packet | av.AudioFrame | None] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.delivered = 0
        self.on_overflow: Callable[[], object] | None = None

    def put(self, item: av.Packet | av.AudioFrame) -> None:
        if self.readyState != "live":
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                logger.warning("%s track %s: consumer slow, %d dropped", self.kind, self.name,
                               self.dropped)
            if self.on_overflow is not None:
                self.on_overflow()
        self._queue.put_nowait(item)

    async def recv(self) -> av.Packet | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        self.delivered += 1
        return item

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)


async def recv_newest(track: MediaStreamTrack) -> tuple[Any, int]:
    """The next frame of ``track`` or, if more are already waiting, the newest of them,
    and how many older waiting frames were passed over.

    aiortc's decoder thread hands decoded frames to ``RemoteStreamTrack`` through an
    unbounded queue: a reader that was held up once (a busy moment on the machine) would
    otherwise work through the backlog at the arrival rate and stay behind for the rest of
    the lesson. A picture consumer (compositor, screen) wants the newest frame only.
    Raises ``MediaStreamError`` like ``recv`` when the track ends."""
    frame = await track.recv()
    queue = getattr(track, "_queue", None)
    skipped = 0
    if isinstance(queue, asyncio.Queue):
        while not queue.empty():
            newer = queue.get_nowait()
            if newer is None:  # end of stream: leave it for the next recv
                queue.put_nowait(None)
                break
            frame = newer
            skipped += 1
    return frame, skipped


def audio_frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Decoded aiortc audio (s16, packed, mono or stereo) → int16 mono samples."""
    data = frame.to_ndarray().reshape(-1)
    channels = len(frame.layout.channels)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return np.ascontiguousarray(data, dtype=np.int16)


class AudioJitterBuffer(JitterBuffer):
    """A low-latency audio jitter buffer (one Opus frame per RTP packet).

    Stock aiortc (capacity 16, prefetch 4) holds four frames back and, after a loss,
    waits at the hole until the buffer overflows, then stays ~350 ms behind. Here a frame
    is released as soon as it is next in order; a hole is given up (the frame is lost,
    the mixer conceals it) once ``hole_wait`` later packets have arrived; and when more
    than ``max_backlog`` frames are ready at once the oldest are dropped, so the delay
    returns to the minimum after every disturbance.
    """

    def __init__(self, capacity: int = 16, prefetch: int = 0, is_video: bool = False,
                 hole_wait: int = 2, max_backlog: int = 2) -> None:
        super().__init__(capacity=capacity, prefetch=0, is_video=is_video)
        self.hole_wait = hole_wait
        self.max_backlog = max_backlog
        self.frames_lost = 0
        self.frames_dropped = 0

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if self._origin is None:
            return None
        present = [
            self._packets[(self._origin + i) % self._capacity] is not None
            for i in range(self._capacity)
        ]
        # Give up a hole once enough later packets show it is not just reordering.
        while not present[0] and sum(present[1:]) >= self.hole_wait:
            self.remove(1)
            self.frames_lost += 1
            present = [*present[1:], False]
        if not present[0]:
            return None
        ready = 0
        while ready < len(present) and present[ready]:
            ready += 1
        if ready > self.max_backlog:
            drop = ready - self.max_backlog
            self.remove(drop)
            self.frames_dropped += drop
        packet = self._packets[self._origin % self._capacity]
        assert packet is not None
        self.remove(1)
        return _assemble([packet], packet.timestamp)


def install_low_latency_jitter_buffers(video: bool = True, audio: bool = True,
                                       hole_wait_s: float = VIDEO_HOLE_WAIT_S) -> None:
    """Make every RTCRtpReceiver created from now on use our jitter buffers (video holes
    wait ``hole_wait_s``; ``inf``: until 128 packets pass them, as stock aiortc)."""

    class Factory:
        def __new__(cls, capacity: int, prefetch: int = 0, is_video: bool = False) -> Any:
            if is_video:
                if video:
                    return MarkerJitterBuffer(capacity=capacity, is_video=True,
                                              hole_wait_s=hole_wait_s)
                return JitterBuffer(capacity=capacity, prefetch=prefetch, is_video=True)
            if audio:
                return AudioJitterBuffer(capacity=capacity)
            return JitterBuffer(capacity=capacity, prefetch=prefetch)

    aiortc.rtcrtpreceiver.JitterBuffer = Factory  # type: ignore[misc]


def use_opus_bitrate(kbps: int) -> None:
    """Make every Opus encoder aiortc creates from now on encode at ``kbps`` kbit/s (aiortc
    1.16 fixes 96 kbit/s in ``OpusEncoder.__init__``; the codec opens at the first frame,
    so setting it after the constructor takes effect)."""
    if kbps <= 0:
        raise ValueError(f"Opus bitrate must be positive, got {kbps}")
    encoder_class = aiortc.codecs.opus.OpusEncoder
    init = getattr(encoder_class, "_syncclass_original_init", encoder_class.__init__)

    def __init__(self: Any) -> None:
        init(self)
        self.codec.bit_rate = kbps * 1000

    encoder_class._syncclass_original_init = init  # type: ignore[attr-defined]
    encoder_class.__init__ = __init__  # type: ignore[method-assign]


AIORTC_AUDIO_LEVEL: Callable[[av.AudioFrame], int] = aiortc.rtp.compute_audio_level_dbov
"""aiortc's own audio level function (what :func:`use_fast_audio_level` replaces)."""


def audio_level_dbov(frame: av.AudioFrame) -> int:
    """The RFC 6465 (Appendix A) level of ``frame`` in -dBov, as aiortc 1.16's
    ``rtp.compute_audio_level_dbov`` computes it (same value for every s16 frame: the RMS
    over all of the first plane's samples, rounded, clamped to [-127, 0]), in numpy."""
    samples = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16).astype(np.float64)
    energy = float(np.dot(samples, samples))
    rms = math.sqrt(energy / (frame.samples * 32767 * 32767))
    if rms <= 0:
        return -127
    return round(min(max(20 * math.log10(rms), -127), 0))


def use_fast_audio_level() -> None:
    """Make every aiortc audio sender compute its packets' audio level with
    :func:`audio_level_dbov`. aiortc 1.16 loops over the samples in Python while holding
    the GIL: 83 µs per 20 ms mono frame (163 µs stereo) against 6 µs (7 µs), once per frame
    per sender: 0.4 % of a core per agent's microphone stream, and ~4 % for a mixer whose
    nine N-1 mixes go through aiortc's encoder (``SYNCCLASS_MIX_OPUS=aiortc``; by default
    the mixer hands aiortc encoded packets, which get no level). The sender looks the
    function up on the ``aiortc.rtp`` module at each frame."""
    aiortc.rtp.compute_audio_level_dbov = audio_level_dbov


class MonoOpusDecoder(aiortc.codecs.opus.OpusDecoder):
    """aiortc's Opus decoder with libopus asked for one channel: it decodes a stereo stream
    downmixed and a mono one without the upmix aiortc asks for (its decoder is fixed to
    stereo), half the CPU when the consumer wants mono anyway (35 vs 78 µs per 20 ms
    block with the conversion to mono samples)."""

    def __init__(self) -> None:
        super().__init__()
        self.codec.layout = "mono"


class InlineAudioDecoder:
    """Stands in for one audio ``RTCRtpReceiver``'s decoder queue (aiortc 1.16:
    ``_RTCRtpReceiver__decoder_queue``, a ``queue.Queue`` its decoder thread reads).

    The receiver calls ``put((codec, frame))`` on the event loop for every complete frame
    out of its jitter buffer; this decodes it there and then (mono Opus) and queues the
    decoded frame on the track. Per 20 ms frame that replaces a thread hand-off both ways
    (``queue.Queue.put``, a thread wake-up, ``run_coroutine_threadsafe`` with its task and
    futures, a loop wake-up) costing more than the decode. aiortc's decoder thread still
    starts but only waits, in :meth:`get`, for the end of the stream (``put(None)`` from
    ``RTCRtpReceiver.stop``), which it passes on to the track as before."""

    def __init__(self, output: asyncio.Queue[Any], error: threading.Event) -> None:
        self._output = output
        self._error = error
        self._end: queue.Queue[None] = queue.Queue()
        self._codec_name: str | None = None
        self._decoder: Any = None
        self.frames_decoded = 0
        self.decode_errors = 0

    def put(self, item: tuple[Any, JitterFrame] | None) -> None:
        if item is None:
            self._end.put(None)
            return
        codec, encoded = item
        if codec.name != self._codec_name:
            self._decoder = (MonoOpusDecoder() if codec.name.lower() == "opus"
                             else aiortc.rtcrtpreceiver.get_decoder(codec))
            self._codec_name = codec.name
        try:
            frames = self._decoder.decode(encoded)
        except Exception as exc:  # as aiortc: keep the decoder, flag the error. Raised
            # here it would reach the DTLS transport's receive loop and stop the classroom's
            # whole connection instead of costing one 20 ms frame.
            self.decode_errors += 1
            logger.warning("audio receiver failed to decode a %s frame: %s", codec.name, exc)
            self._error.set()
            return
        for frame in frames:
            self.frames_decoded += 1
            self._output.put_nowait(frame)

    def get(self) -> None:
        """What aiortc's decoder thread blocks on: only the end of the stream."""
        return self._end.get()


def use_inline_audio_decoding() -> None:
    """Make every audio ``RTCRtpReceiver`` that starts from now on decode with an
    :class:`InlineAudioDecoder` (mono frames, decoded on the event loop). For a process
    that receives many audio streams (the mixer: one per classroom, 450 frames/s at
    1 + 8). Wraps ``RTCRtpReceiver.receive`` (aiortc 1.16), which creates the decoder
    thread from ``_RTCRtpReceiver__decoder_queue`` on its first call."""
    receive = getattr(RTCRtpReceiver, "_syncclass_original_receive", RTCRtpReceiver.receive)

    async def receive_inline(self: RTCRtpReceiver, parameters: Any) -> None:
        started = getattr(self, "_RTCRtpReceiver__started", None)
        error = getattr(self, "_RTCRtpReceiver__decoder_error", None)
        output = getattr(self.track, "_queue", None)
        if started is None or not isinstance(error, threading.Event) or not isinstance(
                getattr(self, "_RTCRtpReceiver__decoder_queue", None), queue.Queue
                | InlineAudioDecoder) or not isinstance(output, asyncio.Queue):
            raise RuntimeError("aiortc changed: RTCRtpReceiver's decoder queue, decoder "
                               "error or track queue is gone")
        if self.track.kind == "audio" and not started:
            self._RTCRtpReceiver__decoder_queue = (  # type: ignore[attr-defined]
                InlineAudioDecoder(output, error))
        await receive(self, parameters)

    RTCRtpReceiver._syncclass_original_receive = receive  # type: ignore[attr-defined]
    RTCRtpReceiver.receive = receive_inline  # type: ignore[method-assign]


def use_threaded_audio_decoding() -> None:
    """Undo :func:`use_inline_audio_decoding` for receivers that start from now on."""
    receive = getattr(RTCRtpReceiver, "_syncclass_original_receive", None)
    if receive is not None:
        RTCRtpReceiver.receive = receive  # type: ignore[method-assign]


async def close_peer(pc: RTCPeerConnection) -> None:
    """Close ``pc`` and any ICE transport it still holds.

    aiortc 1.16's ``close()`` stops only the transports attached to its transceivers; an ICE
    transport created for an m-line and later left without a transceiver (seen with two
    video sections from a browser-style offer) keeps its gathered UDP socket open.
    """
    await pc.close()
    leftovers: set[Any] = getattr(pc, "_RTCPeerConnection__iceTransports", set())
    for transport in list(leftovers):
        if transport.state != "closed":
            await transport.stop()


def observe_rtcp_feedback(sender: RTCRtpSender,
                          callback: Callable[[LinkFeedback], object]) -> None:
    """Call ``callback`` with what each RTCP packet for ``sender`` says about its link:
    REMB (kbit/s), receiver-report loss fraction and round-trip time.

    aiortc hands REMB only to a sender-side encoder's ``target_bitrate``, which a track of
    pre-encoded packets does not have; this wraps the sender's RTCP handler (aiortc 1.16's
    ``RTCRtpSender._handle_rtcp_packet``, which the DTLS transport calls per packet) so the
    packet is handled as before and then read. RTT is aiortc's smoothed value.
    """
    original = getattr(sender, "_handle_rtcp_packet", None)
    if original is None:
        raise RuntimeError("aiortc changed: RTCRtpSender._handle_rtcp_packet is gone")

    async def handle(packet: Any) -> None:
        await original(packet)
        feedback = _link_feedback(sender, packet)
        if feedback is not None:
            try:
                callback(feedback)
            except Exception:  # a policy bug must not break RTCP handling
                logger.exception("RTCP feedback callback failed")

    sender._handle_rtcp_packet = handle  # type: ignore[method-assign]


def observe_sender_reports(receiver: RTCRtpReceiver, clock: SenderClock) -> None:
    """Feed ``clock`` every RTCP sender report that arrives for ``receiver``: the mapping
    from a decoded frame's ``pts`` to the sender's NTP time that lip sync needs.

    aiortc 1.16 keeps only the middle 32 bits of a report's NTP time (for its receiver
    reports), and its receiver hands frames out with ``pts`` = RTP timestamp minus the
    stream's first one (``TimestampMapper``); so this wraps
    ``RTCRtpReceiver._handle_rtcp_packet`` (called by the DTLS transport per packet) and
    moves each report's RTP timestamp onto the same origin as the frames' ``pts``."""
    original = getattr(receiver, "_handle_rtcp_packet", None)
    mapper = getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None)
    if original is None or mapper is None or not hasattr(mapper, "_origin"):
        raise RuntimeError("aiortc changed: RTCRtpReceiver's RTCP handler or timestamp "
                           "mapper is gone")

    async def handle(packet: Any) -> None:
        await original(packet)
        origin = mapper._origin
        if isinstance(packet, RtcpSrPacket) and origin is not None:
            info = packet.sender_info
            clock.update(ntp_to_seconds(info.ntp_timestamp),
                         (info.rtp_timestamp - origin) & 0xFFFFFFFF)

    receiver._handle_rtcp_packet = handle  # type: ignore[method-assign]


def _link_feedback(sender: RTCRtpSender, packet: Any) -> LinkFeedback | None:
    ssrc = sender._ssrc
    if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
        for report in packet.reports:
            if report.ssrc == ssrc:
                rtt = getattr(sender, "_RTCRtpSender__rtt", None)
                return LinkFeedback(fraction_lost=report.fraction_lost / 256.0,
                                    rtt_ms=None if rtt is None else rtt * 1000.0)
    elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
        try:
            bitrate, ssrcs = unpack_remb_fci(packet.fci)
        except ValueError:
            return None
        if ssrc in ssrcs:
            return LinkFeedback(remb_kbps=bitrate / 1000.0)
    return None
