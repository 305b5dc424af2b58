"""Transport-wide congestion control feedback: wire format and bookkeeping (no I/O).

draft-holmer-rmcat-transport-wide-cc-extensions-01, which Chromium speaks: the sender
stamps every RTP packet of a peer connection (audio, video, retransmissions) with one
16-bit *transport-wide sequence number* in the RTP header extension :data:`TRANSPORT_CC_URI`;
the receiver answers every 50-100 ms with an RTCP transport feedback packet (RTPFB, FMT 15)
listing, for each sequence number since its last feedback, whether it arrived and when
(in 250 µs steps). The sender matches those arrival times with its own send times and
sizes; :mod:`syncclass.gcc` turns them into a bitrate estimate.

- :class:`TransportFeedback` parses and writes the RTCP packet (``parse`` / ``__bytes__``).
- :class:`FeedbackBuilder` is the receiver's side: arrivals in, feedback packets out.
- :class:`SendHistory` is the sender's side: sequence numbers stamped on packets going out,
  with their send times and sizes, matched against feedback into :class:`PacketResult`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
"""The RTP header extension carrying the transport-wide sequence number."""
RTCP_RTPFB = 205
RTCP_RTPFB_TRANSPORT_CC = 15
DELTA_TICK_US = 250
"""Receive deltas count in 250 µs."""
REFERENCE_TICK_US = 64_000
"""The reference time counts in 64 ms."""
_SYMBOL_NOT_RECEIVED, _SYMBOL_SMALL, _SYMBOL_LARGE = 0, 1, 2
_MAX_RUN = 0x1FFF
_MAX_STATUS_COUNT = 0xFFFF


def _seq_diff(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, in ``[-32768, 32767]``."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


@dataclass
class TransportFeedback:
    """One RTCP transport feedback packet.

    ``arrivals`` lists, from ``base_seq`` on, each packet's arrival time in µs on the
    receiver's clock (a multiple of 250 µs) or ``None`` if it has not arrived; the first
    received packet's time is ``reference_time`` × 64 ms plus its delta.
    """

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_time: int
    """Signed 24-bit, in 64 ms."""
    feedback_count: int
    """8-bit counter of feedback packets sent (wraps)."""
    arrivals: list[int | None] = field(default_factory=list)

    def packets(self) -> list[tuple[int, int | None]]:
        """``(transport-wide sequence number, arrival µs or None)`` for every packet."""
        return [((self.base_seq + i) & 0xFFFF, t) for i, t in enumerate(self.arrivals)]

    @classmethod
    def parse(cls, data: bytes) -> TransportFeedback:
        """Parse one RTCP packet (header included). Raises ``ValueError`` on bad input."""
        if len(data) < 20:
            raise ValueError("RTCP transport feedback is shorter than 20 bytes")
        v_p_fmt, packet_type, length = struct.unpack("!BBH", data[:4])
        if v_p_fmt >> 6 != 2:
            raise ValueError("RTCP transport feedback has an invalid version")
        if packet_type != RTCP_RTPFB or v_p_fmt & 0x1F != RTCP_RTPFB_TRANSPORT_CC:
            raise ValueError("not an RTCP transport feedback packet (RTPFB, FMT 15)")
        end = 4 + length * 4
        if end > len(data):
            raise ValueError("RTCP transport feedback is truncated")
        if v_p_fmt & 0x20:
            pad = data[end - 1]
            if pad == 0 or pad > end - 20:
                raise ValueError("RTCP transport feedback padding length is invalid")
            end -= pad
        sender_ssrc, media_ssrc, base_seq, count, ref_fb = struct.unpack("!LLHHL", data[4:20])
        reference_time = ref_fb >> 8
        if reference_time & 0x800000:
            reference_time -= 1 << 24
        pos = 20
        symbols: list[int] = []
        while len(symbols) < count:
            if pos + 2 > end:
                raise ValueError("RTCP transport feedback: packet chunks are truncated")
            (chunk,) = struct.unpack("!H", data[pos:pos + 2])
            pos += 2
            if chunk & 0x8000 == 0:
                symbol, run = (chunk >> 13) & 0x3, chunk & _MAX_RUN
                if symbol == 3:
                    raise ValueError("RTCP transport feedback: reserved status symbol")
                symbols.extend([symbol] * min(run, count - len(symbols)))
            elif chunk & 0x4000 == 0:
                for i in range(14):
                    symbols.append((chunk >> (13 - i)) & 0x1)
            else:
                for i in range(7):
                    symbol = (chunk >> (12 - 2 * i)) & 0x3
                    if symbol == 3 and len(symbols) < count:
                        raise ValueError("RTCP transport feedback: reserved status symbol")
                    symbols.append(symbol)
        del symbols[count:]
        arrivals: list[int | None] = []
        now_us = reference_time * REFERENCE_TICK_US
        for symbol in symbols:
            if symbol == _SYMBOL_NOT_RECEIVED:
                arrivals.append(None)
                continue
            if symbol == _SYMBOL_SMALL:
                if pos + 1 > end:
                    raise ValueError("RTCP transport feedback: receive deltas are truncated")
                delta = data[pos]
                pos += 1
            else:
                if pos + 2 > end:
                    raise ValueError("RTCP transport feedback: receive deltas are truncated")
                (delta,) = struct.unpack("!h", data[pos:pos + 2])
                pos += 2
            now_us += delta * DELTA_TICK_US
            arrivals.append(now_us)
        return cls(sender_ssrc, media_ssrc, base_seq, reference_time, ref_fb & 0xFF, arrivals)

    def __bytes__(self) -> bytes:
        """The packet, zero-padded to 32 bits (no P bit, as libwebrtc's parser accepts).
        Raises ``ValueError`` if a delta does not fit 16 bits or a time is not on the grid."""
        if not 0 < len(self.arrivals) <= _MAX_STATUS_COUNT:
            raise ValueError(f"a transport feedback lists 1..65535 packets, "
                             f"not {len(self.arrivals)}")
        symbols: list[int] = []
        deltas = bytearray()
        now_us = self.reference_time * REFERENCE_TICK_US
        for t in self.arrivals:
            if t is None:
                symbols.append(_SYMBOL_NOT_RECEIVED)
                continue
            if t % DELTA_TICK_US:
                raise ValueError(f"arrival {t} µs is not a multiple of {DELTA_TICK_US} µs")
            delta = (t - now_us) // DELTA_TICK_US
            now_us = t
            if 0 <= delta <= 0xFF:
                symbols.append(_SYMBOL_SMALL)
                deltas.append(delta)
            elif -0x8000 <= delta <= 0x7FFF:
                symbols.append(_SYMBOL_LARGE)
                deltas += struct.pack("!h", delta)
            else:
                raise ValueError(f"receive delta {delta * DELTA_TICK_US} µs does not fit")
        body = bytearray(struct.pack(
            "!LLHHL", self.sender_ssrc, self.media_ssrc, self.base_seq & 0xFFFF,
            len(symbols), ((self.reference_time & 0xFFFFFF) << 8) | (self.feedback_count & 0xFF)))
        for chunk in _chunks(symbols):
            body += struct.pack("!H", chunk)
        body += deltas
        while len(body) % 4:
            body.append(0)
        return struct.pack("!BBH", 0x80 | RTCP_RTPFB_TRANSPORT_CC, RTCP_RTPFB,
                           len(body) // 4) + bytes(body)


def _chunks(symbols: list[int]) -> list[int]:
    """Packet status chunks for ``symbols``: a run-length chunk for a run of 14 or more
    equal symbols, else a 1-bit vector of 14 if they are all 0/1, else a 2-bit vector of 7."""
    chunks: list[int] = []
    i, n = 0, len(symbols)
    while i < n:
        run = 1
        while i + run < n and symbols[i + run] == symbols[i] and run < _MAX_RUN:
            run += 1
        if run >= 14:
            chunks.append((symbols[i] << 13) | run)
            i += run
            continue
        window = symbols[i:i + 14]
        if all(s < 2 for s in window):
            chunk = 0x8000
            for k, s in enumerate(window):
                chunk |= s << (13 - k)
            chunks.append(chunk)
            i += 14
            continue
        chunk = 0xC000
        for k, s in enumerate(symbols[i:i + 7]):
            chunk |= s << (12 - 2 * k)
        chunks.append(chunk)
        i += 7
    return chunks


def find_transport_feedback(data: bytes) -> list[TransportFeedback]:
    """Every transport feedback packet in a compound RTCP datagram ``data`` (others are
    skipped; a malformed compound yields what parsed before the fault)."""
    found: list[TransportFeedback] = []
    pos = 0
    while pos + 4 <= len(data):
        v_p_fmt, packet_type, length = struct.unpack("!BBH", data[pos:pos + 4])
        end = pos + 4 + length * 4
        if v_p_fmt >> 6 != 2 or end > len(data):
            break
        if packet_type == RTCP_RTPFB and v_p_fmt & 0x1F == RTCP_RTPFB_TRANSPORT_CC:
            try:
                found.append(TransportFeedback.parse(data[pos:end]))
            except ValueError:
                pass
        pos = end
    return found


class FeedbackBuilder:
    """The receiving side: record each packet's transport-wide sequence number and arrival
    time; :meth:`build` returns the feedback packets for everything since the last one.

    Sequence numbers are unwrapped; a packet older than the last feedback's range is
    ignored (it was already reported missing). At most ``max_packets`` go into one
    feedback; larger gaps start a new one.
    """

    def __init__(self, sender_ssrc: int, max_packets: int = 1000) -> None:
        self.sender_ssrc = sender_ssrc
        self.max_packets = max_packets
        self._arrivals: dict[int, int] = {}
        self._next: int | None = None
        """Unwrapped sequence number the next feedback starts from."""
        self._last: int | None = None
        """Highest unwrapped sequence number seen."""
        self._count = 0

    def add(self, sequence_number: int, arrival_us: int) -> None:
        """A packet with transport-wide ``sequence_number`` arrived at ``arrival_us`` (µs,
        monotonic)."""
        if self._last is None:
            seq = sequence_number
        else:
            seq = self._last + _seq_diff(sequence_number, self._last & 0xFFFF)
        if self._next is None:
            self._next = seq
        if seq < self._next:
            return
        self._last = seq if self._last is None else max(self._last, seq)
        self._arrivals.setdefault(seq, arrival_us)

    def build(self, media_ssrc: int = 0) -> list[TransportFeedback]:
        """Feedback for every packet since the last call (empty if none arrived)."""
        if not self._arrivals or self._next is None or self._last is None:
            return []
        out: list[TransportFeedback] = []
        start = self._next
        while start <= self._last:
            # The reference time is placed at the first *received* packet (missing ones
            # before it are listed too: the sender counts them as lost).
            first = start
            while first not in self._arrivals and first - start < self.max_packets:
                first += 1
            if first not in self._arrivals:
                start = first  # a long run of losses: skip it, report from what arrived
                continue
            ref_us = self._arrivals[first] // REFERENCE_TICK_US * REFERENCE_TICK_US
            arrivals: list[int | None] = []
            prev = ref_us
            seq = start
            while seq <= self._last and len(arrivals) < self.max_packets:
                t = self._arrivals.get(seq)
                if t is not None:
                    t = t // DELTA_TICK_US * DELTA_TICK_US
                    if not -0x8000 <= (t - prev) // DELTA_TICK_US <= 0x7FFF:
                        break
                    prev = t
                arrivals.append(t)
                seq += 1
            while arrivals and arrivals[-1] is None:
                arrivals.pop()
                seq -= 1
            out.append(TransportFeedback(self.sender_ssrc, media_ssrc, start & 0xFFFF,
                                         ref_us // REFERENCE_TICK_US, self._count & 0xFF,
                                         arrivals))
            self._count += 1
            start = seq
        self._next = self._last + 1
        self._arrivals.clear()
        return out


@dataclass(frozen=True)
class PacketResult:
    """One sent packet as the feedback reported it."""

    sequence_number: int
    """Unwrapped transport-wide sequence number."""
    send_time_s: float
    """When we sent it (monotonic), s."""
    size_bytes: int
    arrival_s: float | None
    """When it arrived on the receiver's clock (s, arbitrary origin), ``None`` if lost."""
    ssrc: int = 0


class SendHistory:
    """The sending side: the transport-wide sequence numbers stamped on outgoing packets,
    with send time and size, kept for ``max_age_s``; :meth:`on_feedback` matches a feedback
    packet against them. Each packet is reported once (a later feedback listing it again
    is ignored for it)."""

    def __init__(self, max_age_s: float = 5.0) -> None:
        self.max_age_s = max_age_s
        self._next = 0
        self._sent: dict[int, tuple[float, int, int]] = {}
        self._oldest = 0
        self._receiver_wraps = 0
        self._last_reference: int | None = None

    def next_sequence_number(self, send_time_s: float, size_bytes: int, ssrc: int = 0) -> int:
        """Stamp the next packet (sent at monotonic ``send_time_s``, ``size_bytes`` on the
        wire): its 16-bit transport-wide sequence number."""
        seq = self._next
        self._next += 1
        self._sent[seq] = (send_time_s, size_bytes, ssrc)
        while self._oldest < seq:  # forget what no feedback reported in max_age_s
            entry = self._sent.get(self._oldest)
            if entry is not None and send_time_s - entry[0] <= self.max_age_s:
                break
            self._sent.pop(self._oldest, None)
            self._oldest += 1
        return seq & 0xFFFF

    def on_feedback(self, feedback: TransportFeedback) -> list[PacketResult]:
        """The sent packets ``feedback`` reports, in sequence order (unknown ones skipped)."""
        if self._next == 0:
            return []
        newest = self._next - 1
        base = newest + _seq_diff(feedback.base_seq, newest & 0xFFFF)
        # The reference time is 24 bits of 64 ms: it wraps every ~12.4 days; follow it.
        ref = feedback.reference_time & 0xFFFFFF
        if self._last_reference is not None and ref < self._last_reference - (1 << 23):
            self._receiver_wraps += 1
        self._last_reference = ref
        offset_us = self._receiver_wraps * (1 << 24) * REFERENCE_TICK_US
        results = []
        for i, arrival in enumerate(feedback.arrivals):
            sent = self._sent.pop(base + i, None)
            if sent is None:
                continue
            results.append(PacketResult(
                base + i, sent[0], sent[1],
                None if arrival is None else (arrival + offset_us) / 1e6, sent[2]))
        return results


def read_transport_sequence_number(packet: bytes, extension_id: int) -> int | None:
    """The transport-wide sequence number in an RTP packet's header extension
    ``extension_id`` (RFC 8285 one- or two-byte form), ``None`` if it has none.
    Reads only the header, so a receiver can note it before aiortc parses the packet."""
    if len(packet) < 12 or packet[0] >> 6 != 2 or not packet[0] & 0x10:
        return None
    pos = 12 + 4 * (packet[0] & 0x0F)
    if pos + 4 > len(packet):
        return None
    profile, words = struct.unpack("!HH", packet[pos:pos + 4])
    pos += 4
    end = pos + 4 * words
    if end > len(packet):
        return None
    if profile == 0xBEDE:
        while pos < end:
            byte = packet[pos]
            if byte == 0:
                pos += 1
                continue
            x_id, x_len = byte >> 4, (byte & 0x0F) + 1
            if x_id == 15:
                return None
            if x_id == extension_id:
                return (struct.unpack("!H", packet[pos + 1:pos + 3])[0]
                        if x_len == 2 and pos + 3 <= end else None)
            pos += 1 + x_len
    elif profile & 0xFFF0 == 0x1000:
        while pos + 2 <= end:
            x_id, x_len = packet[pos], packet[pos + 1]
            if x_id == 0:
                pos += 1
                continue
            if x_id == extension_id:
                return (struct.unpack("!H", packet[pos + 2:pos + 4])[0]
                        if x_len == 2 and pos + 4 <= end else None)
            pos += 2 + x_len
    return None
