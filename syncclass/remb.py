"""Receiver bitrate estimate (REMB) paced as libwebrtc paces it, for aiortc 1.16.

aiortc's video receiver runs a remote bitrate estimator on every packet's abs-send-time
(``aiortc.rate.RemoteBitrateEstimator``) and sends a REMB whenever the estimator's rate
control returns a value. While the delay detector reports *overuse*, aiortc 1.16 updates
the rate control on every packet, so a receiver sends one REMB per video packet (~150 a
second per 1.5 Mbit/s stream) for as long as the overuse lasts: a per-packet RTCP build,
SRTCP protect and send on the receiver's event loop, on the downlink of a link that is,
by that very signal, already full. libwebrtc's ``AimdRateControl::TimeToReduceFurther``
lets an overuse lower the estimate again only once the last change is a round trip old
(clamped to 10-200 ms; a receiver without a round-trip figure uses 200 ms), or at once if
the incoming rate has fallen below half the estimate.

:class:`PacedAimdRateControl` adds that rule to aiortc's rate control: an overuse update
that comes too soon returns nothing (no REMB; the estimate keeps its last decrease).
Everything else (increase, hold, the first estimate, the 500 ms feedback interval) is
aiortc's. :func:`use_paced_remb` makes every receiver created from now on use it
(``SYNCCLASS_REMB=stock`` keeps aiortc's pace, still counted, for side-by-side
measurement).
"""

from __future__ import annotations

import aiortc.rtcrtpreceiver
from aiortc.rate import AimdRateControl, BandwidthUsage, RemoteBitrateEstimator

REDUCTION_INTERVAL_MS = 200
"""An overuse lowers the estimate at most once per this, ms (libwebrtc: the round trip
clamped to 10-200 ms, 200 ms when the receiver does not know it)."""

_StockRemoteBitrateEstimator = aiortc.rtcrtpreceiver.RemoteBitrateEstimator


class PacedAimdRateControl(AimdRateControl):
    """aiortc 1.16's ``AimdRateControl`` with libwebrtc's ``TimeToReduceFurther``."""

    def __init__(self, reduction_interval_ms: int = REDUCTION_INTERVAL_MS) -> None:
        super().__init__()
        self.reduction_interval_ms = reduction_interval_ms
        self.held = 0
        """Overuse updates that came too soon and were not applied (and sent no REMB)."""

    def update(self, bandwidth_usage: BandwidthUsage, estimated_throughput: int | None,
               now_ms: int) -> int | None:
        if (bandwidth_usage == BandwidthUsage.OVERUSING and self.current_bitrate_initialized
                and not self.time_to_reduce_further(now_ms, estimated_throughput)):
            self.held += 1
            return None
        return super().update(bandwidth_usage, estimated_throughput, now_ms)

    def time_to_reduce_further(self, now_ms: int, estimated_throughput: int | None) -> bool:
        last = self.last_change_ms
        if last is None or now_ms - last >= self.reduction_interval_ms:
            return True
        return estimated_throughput is not None and estimated_throughput < self.current_bitrate / 2


class PacedRemoteBitrateEstimator(RemoteBitrateEstimator):
    """aiortc 1.16's estimator with :class:`PacedAimdRateControl`. The class counts, over
    every instance of the process, the REMBs its receivers were told to send and the
    overuse updates held back (``/api/stats`` → ``process.remb``)."""

    reduction_interval_ms = REDUCTION_INTERVAL_MS
    """Set by :func:`use_paced_remb`; 0 behaves as aiortc does (every overuse update
    applied), still counted."""
    sent_total = 0
    held_total = 0

    def __init__(self) -> None:
        super().__init__()
        self.rate_control: PacedAimdRateControl = PacedAimdRateControl(
            type(self).reduction_interval_ms)

    def add(self, arrival_time_ms: int, abs_send_time: int, payload_size: int,
            ssrc: int) -> tuple[int, list[int]] | None:
        held = self.rate_control.held
        remb = super().add(arrival_time_ms, abs_send_time, payload_size, ssrc)
        cls = PacedRemoteBitrateEstimator
        cls.held_total += self.rate_control.held - held
        if remb is not None:
            cls.sent_total += 1
        return remb


def remb_counts() -> dict[str, int]:
    """REMBs sent and overuse updates held back by this process's receivers so far."""
    return {"sent": PacedRemoteBitrateEstimator.sent_total,
            "held": PacedRemoteBitrateEstimator.held_total,
            "reduction_interval_ms": PacedRemoteBitrateEstimator.reduction_interval_ms}


def use_paced_remb(reduction_interval_ms: int = REDUCTION_INTERVAL_MS) -> None:
    """Every video ``RTCRtpReceiver`` created from now on paces its REMBs (aiortc 1.16
    creates its estimator from ``aiortc.rtcrtpreceiver.RemoteBitrateEstimator``).
    ``reduction_interval_ms=0`` keeps aiortc's pace but counts."""
    if reduction_interval_ms < 0:
        raise ValueError(f"reduction interval must be >= 0 ms, got {reduction_interval_ms}")
    PacedRemoteBitrateEstimator.reduction_interval_ms = reduction_interval_ms
    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = PacedRemoteBitrateEstimator  # type: ignore[misc]


def use_stock_remb() -> None:
    """Undo :func:`use_paced_remb`: aiortc's own estimator class again."""
    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = _StockRemoteBitrateEstimator  # type: ignore[misc]
