"""Transport-wide feedback between two real aiortc peers (syncclass.transportcc)."""

from __future__ import annotations

import asyncio

import aiortc.codecs
from aiortc import RTCDtlsTransport, RTCRtpSender, VideoStreamTrack

from syncclass.adapt import LinkFeedback
from syncclass.rtc import new_peer_connection, use_host_addresses
from syncclass.transportcc import (
    install_transport_cc,
    observe_transport_estimate,
    transport_congestion,
    uninstall_transport_cc,
)
from syncclass.twcc import TRANSPORT_CC_URI


async def test_feedback_flows_and_senders_get_their_estimate() -> None:
    """Both peers stamp, both answer with feedback; the video sender's callback gets its
    share of the estimate, which holds its start rate on a clean loopback link."""
    use_host_addresses(["127.0.0.1"])
    install_transport_cc()
    a, b = new_peer_connection(), new_peer_connection()
    received: asyncio.Queue[object] = asyncio.Queue()
    b.on("track", received.put_nowait)
    got: list[LinkFeedback] = []
    try:
        sender: RTCRtpSender = a.addTrack(VideoStreamTrack())
        b.addTrack(VideoStreamTrack())
        observe_transport_estimate(sender, got.append)
        offer = await a.createOffer()
        assert TRANSPORT_CC_URI in offer.sdp and "transport-cc" in offer.sdp
        await a.setLocalDescription(offer)
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        assert TRANSPORT_CC_URI in b.localDescription.sdp
        await a.setRemoteDescription(b.localDescription)
        track = await asyncio.wait_for(received.get(), 10)
        for _ in range(45):  # 1.5 s of video
            await asyncio.wait_for(track.recv(), 10)  # type: ignore[attr-defined]
        transport: RTCDtlsTransport = sender.transport
        cc = transport_congestion(transport)
        assert cc is not None and cc.packets_stamped > 40
        assert cc.feedback_received >= 5
        back = transport_congestion(b.getReceivers()[0].transport)
        assert back is not None and back.feedback_sent >= 5
        assert got and all(f.estimate_kbps is not None for f in got)
        # aiortc's test pattern needs a few kbit/s: the estimate may not grow beyond
        # 1.5x what arrives, and a clean link gives no reason to cut it.
        assert cc.estimator.target_kbps() == 300 and cc.estimator.overuses == 0
        acked = cc.estimator.acked_kbps()
        assert acked is not None and 0 < acked < 100
        assert all(0 < (f.estimate_kbps or 0) <= 300 for f in got)
    finally:
        await a.close()
        await b.close()
        uninstall_transport_cc()
        use_host_addresses(None)
    assert all(e.uri != TRANSPORT_CC_URI for e in aiortc.codecs.HEADER_EXTENSIONS["video"])


async def test_a_peer_without_it_is_left_alone() -> None:
    """The answerer negotiates transport-cc, the offerer did not: nothing is stamped and no
    feedback is sent (its senders keep REMB)."""
    use_host_addresses(["127.0.0.1"])
    a = new_peer_connection()
    sender: RTCRtpSender = a.addTrack(VideoStreamTrack())
    offer = await a.createOffer()
    assert TRANSPORT_CC_URI not in offer.sdp
    install_transport_cc()
    b = new_peer_connection()
    received: asyncio.Queue[object] = asyncio.Queue()
    b.on("track", received.put_nowait)
    try:
        await a.setLocalDescription(offer)
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        assert TRANSPORT_CC_URI not in b.localDescription.sdp
        await a.setRemoteDescription(b.localDescription)
        track = await asyncio.wait_for(received.get(), 10)
        for _ in range(10):
            await asyncio.wait_for(track.recv(), 10)  # type: ignore[attr-defined]
        assert transport_congestion(sender.transport) is None
        assert transport_congestion(b.getReceivers()[0].transport) is None
    finally:
        await a.close()
        await b.close()
        uninstall_transport_cc()
        use_host_addresses(None)


def test_the_pacer_lets_a_burst_through_and_spreads_the_rest() -> None:
    """At 300 kbit/s (pacing 750 kbit/s: 93.75 bytes/ms) a 20-packet keyframe: the packets
    whose slot is within PACER_BURST_S go at once, the rest wait for their slot less the
    burst; a fast link's frame never waits (before: every packet waited for its slot)."""
    from syncclass.gcc import GccConfig
    from syncclass.transportcc import PACER_BURST_S, TransportCongestion

    cc = TransportCongestion(GccConfig(start_kbps=300.0))
    rate = 2.5 * 300.0 * 1000 / 8  # bytes/s
    waits = [cc.pacing_delay(1200, 10.0) for _ in range(20)]
    at_once = [w for w in waits if w == 0.0]
    assert len(at_once) == int(PACER_BURST_S * rate / 1200) + 1
    assert waits == sorted(waits)
    assert abs(waits[-1] - (19 * 1200 / rate - PACER_BURST_S)) < 1e-9
    fast = TransportCongestion(GccConfig(start_kbps=2500.0))
    assert all(fast.pacing_delay(1200, 20.0) == 0.0 for _ in range(20))
