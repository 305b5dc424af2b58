"""Sender-side congestion control for aiortc 1.16: transport-wide feedback, both ways.

aiortc 1.16 has no send-side estimator: its receivers send REMB from a receive-side
estimate, which lets video fill a thin link's queue (round trips of 180-420 ms on a
384 kbit/s link). libwebrtc estimates on the sending side from transport-wide feedback
(:mod:`syncclass.twcc`); this is that, as one seam on ``RTCDtlsTransport`` (the one
object every RTP and RTCP packet of a peer connection passes through):

- **negotiation**: the transport-cc header extension (:data:`TRANSPORT_CC_EXTENSION_ID`
  when we offer; a browser's own id when it offers) on audio and video, and the
  ``transport-cc`` RTCP feedback on every codec, so Chromium stamps its packets for the
  mixer and answers the mixer's with feedback;
- **sending** (``_send_rtp``): every RTP packet (audio, video, retransmissions) gets the
  next transport-wide sequence number, its send time and size are kept (:class:`SendHistory`);
  video packets are paced at :data:`PACING_FACTOR` × the estimate (a bounded wait);
- **receiving** (``_handle_rtp_data``): each stamped packet's arrival is noted and a
  feedback packet goes back every ``feedback_interval_s`` (75 ms);
- **feedback** (``_handle_rtcp_data``): matched against the history and fed to
  :class:`syncclass.gcc.GccEstimator`; each sender registered with
  :func:`observe_transport_estimate` is handed its share (the estimate less what the
  other streams of the transport send) as :class:`LinkFeedback` ``estimate_kbps``.

:func:`install_transport_cc` installs it process-wide (``media.adaptation.estimator:
gcc``); a peer that does not negotiate the extension (an agent set to ``remb``) passes
through untouched, and its senders keep their REMB-based estimate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiortc.codecs
from aiortc import RTCDtlsTransport, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpHeaderExtensionParameters
from aiortc.rtp import RtpPacket, is_rtcp

from .adapt import LinkFeedback
from .gcc import GccConfig, GccEstimator
from .twcc import (
    TRANSPORT_CC_URI,
    FeedbackBuilder,
    SendHistory,
    find_transport_feedback,
    read_transport_sequence_number,
)

logger = logging.getLogger(__name__)

TRANSPORT_CC_EXTENSION_ID = 5
"""Header extension id we offer (aiortc uses 1-3; ids are shared by audio and video)."""
FEEDBACK_INTERVAL_S = 0.075
"""A receiver sends transport feedback this often, s (libwebrtc: 50-100 ms)."""
WIRE_OVERHEAD_BYTES = 10 + 8 + 20
"""SRTP auth tag + UDP + IPv4 header: what a packet costs the link beyond its RTP bytes."""
PAYLOAD_SHARE = 0.9
"""Part of a stream's share of the estimate its encoder gets: RTP/SRTP/UDP/IP headers
(5-10 % at 15 fps on a thin link) and the encoder's overshoot need the rest."""
RATE_WINDOW_S = 1.0
PACING_FACTOR = 2.5
"""Video packets leave at most this many times the estimate (libwebrtc's pacing factor):
a keyframe is spread over a few tens of ms instead of hitting a thin link's queue at once,
and the estimator sees its packets as the link's queue does."""
PACER_MAX_DELAY_S = 0.3
"""A video packet waits in the pacer at most this long, s: a backlog beyond it goes out
at once (the estimate is too low or the encoder overshot; the link's queue takes it)."""

PACER_BURST_S = 0.04
"""Packets whose paced slot is at most this far ahead go out at once (libwebrtc's send
burst interval, 40 ms): the pacer still spreads a keyframe on a thin link (at 384 kbit/s
this lets ~5 KB through at once), but on a fast link no packet waits. Pacing every packet
to its slot cost a 1 + 4 lesson on a LAN 45 -> 96-109 ms of glass-to-glass p50 and put
the mixer's event loop at 28.9-30.2 % of a core against 23.4 % with no pacing: a timer
per packet, each firing late on a busy loop (measured, ``benchmarks/capacity.py
--estimators remb,gcc``)."""

_original: dict[str, Any] = {}


@dataclass
class TransportCongestion:
    """Send-side estimate and receive-side feedback of one ``RTCDtlsTransport``."""

    config: GccConfig
    feedback_interval_s: float = FEEDBACK_INTERVAL_S
    history: SendHistory = field(default_factory=SendHistory)
    estimator: GccEstimator = field(init=False)
    builder: FeedbackBuilder = field(default_factory=lambda: FeedbackBuilder(
        random.getrandbits(32)))
    media_ssrc: int = 0
    feedback_task: asyncio.Task[None] | None = None
    feedback_sent: int = 0
    feedback_received: int = 0
    packets_stamped: int = 0
    paced_s: float = 0.0
    """Time video packets waited in the pacer, in total, s."""
    pacer_overflows: int = 0
    """Video packets sent early because the pacer's backlog exceeded its bound."""
    _pacer_next_s: float = 0.0
    _sent: dict[int, deque[tuple[float, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.estimator = GccEstimator(self.config)

    def on_sent(self, ssrc: int, size_bytes: int, now_s: float) -> int:
        """A packet of ``ssrc`` goes out: its transport-wide sequence number."""
        rates = self._sent.setdefault(ssrc, deque())
        rates.append((now_s, size_bytes))
        while rates and now_s - rates[0][0] > RATE_WINDOW_S:
            rates.popleft()
        self.packets_stamped += 1
        return self.history.next_sequence_number(now_s, size_bytes, ssrc)

    def pacing_delay(self, size_bytes: int, now_s: float) -> float:
        """How long a video packet of ``size_bytes`` handed over at ``now_s`` waits, s
        (and books its slot): packets leave at ``PACING_FACTOR`` times the estimate, up to
        ``PACER_BURST_S`` ahead of their slot."""
        rate = PACING_FACTOR * self.estimator.target_kbps() * 1000 / 8  # bytes/s
        start = max(now_s, self._pacer_next_s)
        wait = max(0.0, start - now_s - PACER_BURST_S)
        if wait > PACER_MAX_DELAY_S:
            self.pacer_overflows += 1
            start, wait = now_s + PACER_MAX_DELAY_S + PACER_BURST_S, PACER_MAX_DELAY_S
        self._pacer_next_s = start + size_bytes / rate
        self.paced_s += wait
        return wait

    def sent_kbps(self, ssrc: int, now_s: float) -> float:
        """What ``ssrc`` sent on the wire over the last second, kbit/s."""
        rates = self._sent.get(ssrc)
        if not rates or now_s - rates[-1][0] > RATE_WINDOW_S:
            return 0.0
        return sum(size for _, size in rates) * 8 / 1000 / RATE_WINDOW_S

    def share_kbps(self, ssrcs: set[int], now_s: float) -> float:
        """The estimate less what every stream but ``ssrcs`` sends, kbit/s (≥ 0)."""
        others = sum(self.sent_kbps(s, now_s) for s in self._sent if s not in ssrcs)
        return max(0.0, self.estimator.target_kbps() - others)

    def stats(self) -> dict[str, Any]:
        e = self.estimator
        return {"estimate_kbps": round(e.target_kbps(), 1),
                "delay_kbps": round(e.delay_kbps, 1),
                "acked_kbps": None if e.acked_kbps() is None else round(e.acked_kbps() or 0, 1),
                "loss": round(e.loss_fraction, 3), "overuses": e.overuses,
                "fast_start": e.fast_start, "feedback_sent": self.feedback_sent,
                "feedback_received": self.feedback_received,
                "queue_ms": round(e.queue_ms, 1), "paced_s": round(self.paced_s, 2),
                "pacer_overflows": self.pacer_overflows}


def _state(transport: RTCDtlsTransport) -> TransportCongestion | None:
    return getattr(transport, "_syncclass_cc", None)


def transport_congestion(transport: RTCDtlsTransport) -> TransportCongestion | None:
    """The congestion state of ``transport`` (``None`` before its first packet or when
    transport-wide feedback is not installed)."""
    return _state(transport)


def _extension_id(transport: RTCDtlsTransport) -> int | None:
    ids = getattr(transport._rtp_header_extensions_map, "_HeaderExtensionsMap__ids", None)
    return getattr(ids, "transport_sequence_number", None)


def observe_transport_estimate(sender: RTCRtpSender,
                               callback: Callable[[LinkFeedback], object]) -> None:
    """Call ``callback`` with ``sender``'s share of its transport's send-side estimate
    (``LinkFeedback.estimate_kbps``, kbit/s, for its encoder) after each transport feedback.
    Does nothing visible if the peer did not negotiate transport-wide feedback."""
    sender._syncclass_estimate_callback = callback  # type: ignore[attr-defined]


def _notify(transport: RTCDtlsTransport, cc: TransportCongestion, now_s: float) -> None:
    router = getattr(transport, "_rtp_router", None)
    senders = list(getattr(router, "senders", {}).values())
    for sender in senders:
        rtt = getattr(sender, "_RTCRtpSender__rtt", None)
        if rtt:
            cc.estimator.on_rtt(float(rtt))
    for sender in senders:
        callback = getattr(sender, "_syncclass_estimate_callback", None)
        if callback is None:
            continue
        share = cc.share_kbps({sender._ssrc, sender._rtx_ssrc}, now_s) * PAYLOAD_SHARE
        try:
            callback(LinkFeedback(estimate_kbps=share,
                                  estimate_probing=cc.estimator.fast_start))
        except Exception:  # a policy bug must not break RTCP handling
            logger.exception("transport estimate callback failed")


async def _run_feedback(transport: RTCDtlsTransport, cc: TransportCongestion) -> None:
    send = _original["_send_rtp"]
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        while transport.state != "closed":
            await asyncio.sleep(cc.feedback_interval_s)
            for fb in cc.builder.build(cc.media_ssrc):
                await send(transport, bytes(fb))
                cc.feedback_sent += 1


def install_transport_cc(config: GccConfig | None = None,
                         feedback_interval_s: float = FEEDBACK_INTERVAL_S) -> None:
    """Negotiate transport-wide feedback on every peer connection created from now on, and
    estimate every sending transport's rate from it (see the module docstring)."""
    cfg = config or GccConfig()
    for kind in ("audio", "video"):
        exts = aiortc.codecs.HEADER_EXTENSIONS[kind]
        if not any(e.uri == TRANSPORT_CC_URI for e in exts):
            exts.append(RTCRtpHeaderExtensionParameters(id=TRANSPORT_CC_EXTENSION_ID,
                                                        uri=TRANSPORT_CC_URI))
        for codec in aiortc.codecs.CODECS[kind]:
            if not codec.mimeType.lower().endswith("/rtx"):
                feedback = RTCRtcpFeedback(type="transport-cc")
                if feedback not in codec.rtcpFeedback:
                    codec.rtcpFeedback.append(feedback)
    if _original:
        _original["config"] = (cfg, feedback_interval_s)
        return
    _original.update(_send_rtp=RTCDtlsTransport._send_rtp,
                     _handle_rtp_data=RTCDtlsTransport._handle_rtp_data,
                     _handle_rtcp_data=RTCDtlsTransport._handle_rtcp_data,
                     stop=RTCDtlsTransport.stop, config=(cfg, feedback_interval_s))

    def state_of(transport: RTCDtlsTransport) -> TransportCongestion:
        cc = _state(transport)
        if cc is None:
            c, interval = _original["config"]
            cc = TransportCongestion(c, interval)
            transport._syncclass_cc = cc  # type: ignore[attr-defined]
        return cc

    async def _send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
        ext_id = None if is_rtcp(data) else _extension_id(self)
        if ext_id:
            ext_map = self._rtp_header_extensions_map
            packet = RtpPacket.parse(data, ext_map)
            cc = state_of(self)
            size = len(data) + 3 + WIRE_OVERHEAD_BYTES  # + the extension element
            sender = self._rtp_router.senders.get(packet.ssrc)
            if (getattr(sender, "kind", None) == "video" and asyncio.current_task()
                    is getattr(sender, "_RTCRtpSender__rtp_task", None)):
                # Only first transmissions of video, from the sender's own RTP task:
                # retransmissions are sent from the RTCP handler on the transport's
                # receive loop, which must never wait.
                wait = cc.pacing_delay(size, time.monotonic())
                if wait > 0.001:
                    await asyncio.sleep(wait)
            packet.extensions.transport_sequence_number = cc.on_sent(
                packet.ssrc, size, time.monotonic())
            data = packet.serialize(ext_map)
        await _original["_send_rtp"](self, data)

    async def _handle_rtp_data(self: RTCDtlsTransport, data: bytes,
                               arrival_time_ms: int) -> None:
        ext_id = _extension_id(self)
        if ext_id:
            seq = read_transport_sequence_number(data, ext_id)
            if seq is not None:
                cc = state_of(self)
                cc.builder.add(seq, time.monotonic_ns() // 1000)
                if cc.media_ssrc == 0 and len(data) >= 12:
                    cc.media_ssrc = int.from_bytes(data[8:12], "big")
                if cc.feedback_task is None:
                    cc.feedback_task = asyncio.ensure_future(_run_feedback(self, cc))
        await _original["_handle_rtp_data"](self, data, arrival_time_ms)

    async def _handle_rtcp_data(self: RTCDtlsTransport, data: bytes) -> None:
        cc = _state(self)
        if cc is not None:
            found = find_transport_feedback(data)
            if found:
                now = time.monotonic()
                overuses = cc.estimator.overuses
                for fb in found:
                    cc.feedback_received += 1
                    cc.estimator.on_feedback(cc.history.on_feedback(fb), now)
                if cc.estimator.overuses != overuses:
                    e = cc.estimator
                    logger.info("transport estimate: overuse -> %.0f kbps (acked %s kbps, "
                                "trend %.4f, threshold %.1f ms, queue %.0f ms)", e.target_kbps(),
                                e.acked_kbps() and round(e.acked_kbps() or 0),
                                e.detector.trend, e.detector.threshold_ms, e.queue_ms)
                _notify(self, cc, now)
        await _original["_handle_rtcp_data"](self, data)

    async def stop(self: RTCDtlsTransport) -> None:
        cc = _state(self)
        if cc is not None and cc.feedback_task is not None:
            cc.feedback_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cc.feedback_task
        await _original["stop"](self)

    RTCDtlsTransport._send_rtp = _send_rtp  # type: ignore[method-assign]
    RTCDtlsTransport._handle_rtp_data = _handle_rtp_data  # type: ignore[method-assign]
    RTCDtlsTransport._handle_rtcp_data = _handle_rtcp_data  # type: ignore[method-assign]
    RTCDtlsTransport.stop = stop  # type: ignore[method-assign]


def uninstall_transport_cc() -> None:
    """Undo :func:`install_transport_cc` for peer connections created from now on."""
    for kind in ("audio", "video"):
        exts = aiortc.codecs.HEADER_EXTENSIONS[kind]
        exts[:] = [e for e in exts if e.uri != TRANSPORT_CC_URI]
        for codec in aiortc.codecs.CODECS[kind]:
            codec.rtcpFeedback[:] = [f for f in codec.rtcpFeedback if f.type != "transport-cc"]
    if _original:
        for name in ("_send_rtp", "_handle_rtp_data", "_handle_rtcp_data", "stop"):
            setattr(RTCDtlsTransport, name, _original[name])
        _original.clear()
