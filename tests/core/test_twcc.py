"""Transport-wide feedback wire format and bookkeeping (syncclass.twcc)."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from syncclass.twcc import (
    TRANSPORT_CC_URI,
    FeedbackBuilder,
    SendHistory,
    TransportFeedback,
    find_transport_feedback,
    read_transport_sequence_number,
)

# A feedback packet as libwebrtc writes it (one 1-bit status vector chunk), from
# mediasoup's parser tests (TestFeedbackRtpTransport.cpp, "one bit vector chunk").
ONE_BIT_VECTOR = bytes([
    0x8F, 0xCD, 0x00, 0x07, 0xFA, 0x17, 0xFA, 0x17, 0x09, 0xFA, 0xFF, 0x67,
    0x00, 0x27, 0x00, 0x0D, 0x5F, 0xC2, 0xF1, 0x03, 0xBF, 0x8E, 0x10, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x1C, 0x04, 0x00,
])


def test_parses_libwebrtc_one_bit_vector_and_writes_it_back() -> None:
    fb = TransportFeedback.parse(ONE_BIT_VECTOR)
    assert (fb.sender_ssrc, fb.media_ssrc) == (0xFA17FA17, 0x09FAFF67)
    assert fb.base_seq == 39 and len(fb.arrivals) == 13
    assert fb.reference_time == 0x5FC2F1 and fb.feedback_count == 3
    got = [a is not None for a in fb.arrivals]
    assert got == [True] * 7 + [False] * 3 + [True] * 3
    ref = 0x5FC2F1 * 64_000
    received = [a for a in fb.arrivals if a is not None]
    # deltas 0x10, 0 x 6, 0x1C, 0x04, 0x00 in 250 µs
    assert received[0] == ref + 16 * 250
    assert received[7] - received[6] == 28 * 250 and received[8] - received[7] == 1000
    assert bytes(fb) == ONE_BIT_VECTOR


def test_negative_reference_time() -> None:
    data = bytes([0x8F, 0xCD, 0x00, 0x04, 0xFA, 0x17, 0xFA, 0x17, 0x09, 0xFA, 0xFF, 0x67,
                  0x00, 0x27, 0x00, 0x00, 0xFF, 0xFF, 0xFE, 0x01])
    fb = TransportFeedback.parse(data)
    assert fb.reference_time == -2 and fb.arrivals == []


@pytest.mark.parametrize("arrivals", [
    [0, 250, None, None, 5000, -2000 + 5000, 70_000, *([None] * 20), 80_000],
    [i * 1000 for i in range(40)],
    [None, 1000, *([None] * 9000), 2000],
])
def test_round_trip(arrivals: list[int | None]) -> None:
    base = 64_000 * 10
    arr = [None if a is None else base + a for a in arrivals]
    fb = TransportFeedback(1, 2, 65530, 10, 7, arr)
    again = TransportFeedback.parse(bytes(fb))
    assert again == fb
    assert len(bytes(fb)) % 4 == 0
    assert [s for s, _ in again.packets()][:7] == [65530, 65531, 65532, 65533, 65534, 65535, 0]


@pytest.mark.parametrize("data, why", [
    (ONE_BIT_VECTOR[:18], "shorter"),
    (ONE_BIT_VECTOR[:24], "truncated"),
    (bytes([0x8F, 0xCD, 0x00, 0x05]) + ONE_BIT_VECTOR[4:20] + bytes([0xBF, 0xFF, 0, 0]),
     "deltas are truncated"),
    (bytes([0x81]) + ONE_BIT_VECTOR[1:], "not an RTCP transport feedback"),
])
def test_bad_input_is_rejected(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        TransportFeedback.parse(data)


def test_found_in_compound_rtcp_with_other_packets() -> None:
    rr = struct.pack("!BBHL", 0x80, 201, 1, 1234)
    assert [f.base_seq for f in find_transport_feedback(rr + ONE_BIT_VECTOR + rr)] == [39]
    assert find_transport_feedback(rr) == []


def test_builder_reports_arrivals_and_losses_across_wrap() -> None:
    b = FeedbackBuilder(sender_ssrc=5)
    for seq, t in [(65534, 1_000_000), (65535, 1_002_000), (1, 1_010_000)]:
        b.add(seq, t)
    (fb,) = b.build(media_ssrc=9)
    assert fb.base_seq == 65534 and fb.media_ssrc == 9
    assert [a is not None for a in fb.arrivals] == [True, True, False, True]
    assert b.build() == []
    b.add(0, 1_020_000)  # late: already reported missing
    b.add(2, 1_030_000)
    (fb2,) = b.build()
    assert fb2.base_seq == 2 and fb2.feedback_count == 1


def test_send_history_matches_feedback() -> None:
    h = SendHistory()
    seqs = [h.next_sequence_number(10.0 + i * 0.01, 1000 + i, ssrc=7) for i in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    b = FeedbackBuilder(1)
    for s in (0, 1, 3, 4):
        b.add(s, 5_000_000 + s * 10_000)
    (fb,) = b.build()
    results = h.on_feedback(TransportFeedback.parse(bytes(fb)))
    assert [r.sequence_number for r in results] == [0, 1, 2, 3, 4]
    assert [r.arrival_s is None for r in results] == [False, False, True, False, False]
    assert results[3].arrival_s == pytest.approx(5.03) and results[3].size_bytes == 1003
    assert results[3].send_time_s == pytest.approx(10.03) and results[3].ssrc == 7
    assert h.on_feedback(TransportFeedback.parse(bytes(fb))) == []  # reported once


def test_reads_sequence_number_from_aiortc_serialized_packet() -> None:
    params = RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(id=5, uri=TRANSPORT_CC_URI)])
    ext = HeaderExtensionsMap()
    ext.configure(params)
    packet = RtpPacket(payload_type=97, sequence_number=3, timestamp=4, ssrc=5,
                       payload=b"x" * 10)
    packet.extensions.mid = "0"
    packet.extensions.transport_sequence_number = 0xBEEF
    data = packet.serialize(ext)
    assert read_transport_sequence_number(data, 5) == 0xBEEF
    assert read_transport_sequence_number(data, 6) is None
    packet.extensions.transport_sequence_number = None
    assert read_transport_sequence_number(packet.serialize(ext), 5) is None
    assert read_transport_sequence_number(b"\x80" * 5, 5) is None


def test_send_history_forgets_packets_no_feedback_reported() -> None:
    """Feedback lost on the way must not make the history grow for a whole lesson."""
    h = SendHistory(max_age_s=1.0)
    b = FeedbackBuilder(1)
    for i in range(3000):  # 30 s at 100 packets/s; feedback for every other second only
        t = i * 0.01
        seq = h.next_sequence_number(t, 1000)
        b.add(seq, int(t * 1e6))
        if i % 10 == 9:
            fbs = b.build()
            if int(t) % 2 == 0:
                for fb in fbs:
                    h.on_feedback(fb)
    assert len(h._sent) <= 110
