"""Bounded NACKs and resends (syncclass.nack) against aiortc 1.16's stock behaviour."""

from __future__ import annotations

import asyncio

import aiortc.rtcrtpreceiver
from aiortc import RTCRtpReceiver, RTCRtpSender, VideoStreamTrack
from aiortc.rtp import RtpPacket

from syncclass.nack import (
    NACK_MAX,
    NACK_RETRY_S,
    BoundedNackGenerator,
    _stock_retransmit,
    use_bounded_nacks,
    use_stock_nacks,
)
from syncclass.rtc import new_peer_connection, use_host_addresses


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _seq(n: int) -> RtpPacket:
    return RtpPacket(sequence_number=n % 65536)


def _asks(gen: object, seqs: list[int]) -> list[list[int]]:
    """What a receiver would NACK after each packet (aiortc reads ``missing`` after
    ``add`` returned True)."""
    asks = []
    for n in seqs:
        if gen.add(_seq(n)):  # type: ignore[attr-defined]
            asks.append(sorted(gen.missing))  # type: ignore[attr-defined]
    return asks


def test_stock_generator_asks_again_for_every_packet_still_missing() -> None:
    """The behaviour replaced: each new gap re-asks for all older missing packets."""
    stock = aiortc.rtcrtpreceiver.NackGenerator()
    assert _asks(stock, [1, 3, 5, 7]) == [[2], [2, 4], [2, 4, 6]]


def test_bounded_generator_asks_once_per_retry_interval_and_gives_up() -> None:
    clock = Clock()
    gen = BoundedNackGenerator(clock=clock)
    assert _asks(gen, [1, 3, 5, 7]) == [[2], [4], [6]]  # no time passed: only new gaps
    clock.t += NACK_RETRY_S
    assert _asks(gen, [8]) == [[2, 4, 6]]  # due again
    assert _asks(gen, [9]) == []
    for _ in range(NACK_MAX):
        clock.t += NACK_RETRY_S
        _asks(gen, [10])
    assert gen.add(_seq(11)) is False  # each asked NACK_MAX times: never again
    assert gen.nacked == 3 * NACK_MAX


def test_bounded_generator_forgets_what_arrives_or_is_too_old() -> None:
    clock = Clock()
    gen = BoundedNackGenerator(clock=clock)
    _asks(gen, [65534, 1])  # across the wrap: 65535 and 0 missing
    assert gen.missing == {65535, 0}
    gen.add(_seq(0))  # its retransmission arrived
    clock.t += NACK_RETRY_S
    assert _asks(gen, [2]) == [[65535]]
    clock.t += NACK_RETRY_S
    assert _asks(gen, [200]) == [list(range(72, 200))]  # 3..199 missing: the last 128 kept
    clock.t += NACK_RETRY_S
    assert _asks(gen, [20000]) == [list(range(19872, 20000))]  # a jump: the last 128 only


async def test_bounded_nacks_in_real_peers_and_resends_bounded() -> None:
    """Two peers on loopback with the seams installed: the video receiver uses our
    generator, and the sender resends a packet once, not again within the minimum
    interval, then again after it."""
    use_host_addresses(["127.0.0.1"])
    use_bounded_nacks()
    a, b = new_peer_connection(), new_peer_connection()
    received: asyncio.Queue[object] = asyncio.Queue()
    b.on("track", received.put_nowait)
    try:
        sender: RTCRtpSender = a.addTrack(VideoStreamTrack())
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        track = await asyncio.wait_for(received.get(), 10)
        await asyncio.wait_for(track.recv(), 10)  # type: ignore[attr-defined]
        receiver: RTCRtpReceiver = b.getReceivers()[0]
        assert isinstance(receiver._RTCRtpReceiver__nack_generator,  # type: ignore[attr-defined]
                          BoundedNackGenerator)
        history = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
        seq = max(history.values(), key=lambda p: p.sequence_number).sequence_number
        resent: list[RtpPacket] = []
        transport = sender.transport
        original = transport._send_rtp

        async def counting(data: bytes) -> None:
            packet = RtpPacket.parse(data)
            if packet.ssrc == sender._rtx_ssrc or packet.sequence_number == seq:
                resent.append(packet)
            await original(data)

        transport._send_rtp = counting  # type: ignore[method-assign]
        try:
            sender._RTCRtpSender__rtt = None  # type: ignore[attr-defined]
            await sender._retransmit(seq)
            await sender._retransmit(seq)
            assert len(resent) == 1
            await asyncio.sleep(0.12)
            await sender._retransmit(seq)
            assert len(resent) == 2
            assert sender._syncclass_resends_skipped == 1  # type: ignore[attr-defined]
        finally:
            transport._send_rtp = original  # type: ignore[method-assign]
    finally:
        await a.close()
        await b.close()
        use_stock_nacks()
        use_host_addresses(None)


def test_stock_nacks_restored() -> None:
    use_bounded_nacks()
    use_stock_nacks()
    assert aiortc.rtcrtpreceiver.NackGenerator is not BoundedNackGenerator
    assert RTCRtpSender._retransmit is _stock_retransmit
