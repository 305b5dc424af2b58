"""Paced REMB (syncclass.remb) against aiortc 1.16's estimator on the same packet stream."""

from __future__ import annotations

import aiortc.rtcrtpreceiver
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport
from aiortc.rate import BandwidthUsage, RemoteBitrateEstimator

from syncclass.remb import (
    REDUCTION_INTERVAL_MS,
    PacedAimdRateControl,
    PacedRemoteBitrateEstimator,
    remb_counts,
    use_paced_remb,
    use_stock_remb,
)

SIZE = 1200


def _bottleneck(estimator: RemoteBitrateEstimator, send_kbps: int = 1500,
                cap_kbps: int = 1000, clean_s: float = 5, congested_s: float = 10,
                ) -> list[tuple[int, int]]:
    """A 1.5 Mbit/s stream that goes through a 1 Mbit/s bottleneck after ``clean_s``:
    every packet to ``estimator.add``; returns (arrival ms, REMB bit/s) of each REMB."""
    interval_ms = SIZE * 8 / send_kbps
    serve_ms = SIZE * 8 / cap_kbps
    rembs: list[tuple[int, int]] = []
    sent_ms, arrival_ms = 0.0, 0.0
    while sent_ms < (clean_s + congested_s) * 1000:
        if sent_ms < clean_s * 1000:
            arrival_ms = sent_ms + 20
        else:  # the bottleneck's queue grows by a third of a packet per packet
            arrival_ms = max(sent_ms + 20, arrival_ms + serve_ms)
        abs_send_time = int(sent_ms / 1000 * (1 << 18)) & 0xFFFFFF  # 6.18 fixed point
        remb = estimator.add(arrival_time_ms=int(arrival_ms), abs_send_time=abs_send_time,
                             payload_size=SIZE, ssrc=1234)
        if remb is not None:
            assert remb[1] == [1234]
            rembs.append((int(arrival_ms), remb[0]))
        sent_ms += interval_ms
    return rembs


def test_stock_estimator_sends_a_remb_per_packet_while_overusing() -> None:
    """The behaviour replaced: ~150 packets a second, nearly as many REMBs."""
    rembs = [r for r in _bottleneck(RemoteBitrateEstimator()) if r[0] > 5000]
    assert len(rembs) > 400  # 10 s of congestion


def test_paced_estimator_lowers_its_estimate_once_per_interval_and_follows_the_cap() -> None:
    stock = [r for r in _bottleneck(RemoteBitrateEstimator()) if r[0] > 5000]
    paced = [r for r in _bottleneck(PacedRemoteBitrateEstimator()) if r[0] > 5000]
    # at most one per reduction interval (plus aiortc's 500 ms feedback): ~50, not ~540
    assert len(paced) <= 10_000 / REDUCTION_INTERVAL_MS + 1
    assert len(paced) * 5 < len(stock)
    decreases = [b for a, b in zip(paced, paced[1:], strict=False) if b[1] < a[1]]
    assert decreases, "overuse must still lower the estimate"
    times = [t for t, _ in paced]
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= REDUCTION_INTERVAL_MS
    # both end near the 1 Mbit/s cap, well under the 1.5 Mbit/s sent
    assert 800_000 < paced[-1][1] < 1_200_000
    assert abs(paced[-1][1] - stock[-1][1]) < 0.15 * stock[-1][1]


def test_paced_rate_control_reduces_at_once_when_the_rate_halves() -> None:
    control = PacedAimdRateControl()
    control.set_estimate(2_000_000, now_ms=0)
    assert control.update(BandwidthUsage.OVERUSING, 1_500_000, 1000) == 1_275_000
    assert control.update(BandwidthUsage.OVERUSING, 1_400_000, 1050) is None
    assert control.held == 1
    assert control.current_bitrate == 1_275_000  # the held update changed nothing
    # the incoming rate fell below half the estimate: no waiting
    assert control.update(BandwidthUsage.OVERUSING, 600_000, 1100) == 510_000
    assert control.update(BandwidthUsage.OVERUSING, 500_000, 1100 + REDUCTION_INTERVAL_MS
                          ) == 425_000
    # not overusing: aiortc's own rules
    assert control.update(BandwidthUsage.NORMAL, 500_000, 1400) is not None


def test_receivers_get_the_paced_estimator_and_the_counts_add_up() -> None:
    transport = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()),
                                 [RTCCertificate.generateCertificate()])
    try:
        use_paced_remb()
        receiver = aiortc.rtcrtpreceiver.RTCRtpReceiver("video", transport)
        estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
        assert isinstance(estimator, PacedRemoteBitrateEstimator)
        assert estimator.rate_control.reduction_interval_ms == REDUCTION_INTERVAL_MS
        before = remb_counts()
        rembs = _bottleneck(estimator)
        after = remb_counts()
        assert after["sent"] - before["sent"] == len(rembs)
        assert after["held"] - before["held"] == estimator.rate_control.held > 100

        use_paced_remb(0)  # aiortc's pace, counted
        receiver = aiortc.rtcrtpreceiver.RTCRtpReceiver("video", transport)
        estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
        assert len(_bottleneck(estimator)) > 400 and estimator.rate_control.held == 0
    finally:
        use_paced_remb()  # the class default back for other tests
        use_stock_remb()
    receiver = aiortc.rtcrtpreceiver.RTCRtpReceiver("video", transport)
    assert type(receiver._RTCRtpReceiver__remote_bitrate_estimator) is RemoteBitrateEstimator  # type: ignore[attr-defined]
