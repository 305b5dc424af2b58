"""Bounded NACKs and retransmissions for aiortc 1.16: no retransmission storm on thin links.

Stock aiortc 1.16 answers loss in a way that feeds congestion:

- the video receiver's ``NackGenerator`` asks, each time a new gap appears, for *every*
  packet still missing among the last 128, so under sustained loss the same packets are
  asked for again and again;
- the sender (``RTCRtpSender._retransmit``) resends every packet named in every NACK,
  however recently it resent it.

On a link that loses packets because it is full, each loss then brings back a burst of
old packets, which fill the queue further. Behind a 512 kbit/s link the downlink kept
dropping 22-698 packets a second for ~12 s after the mixer had moved the classroom to a
390 kbit/s rendition (``benchmarks/uplink.py``, 2026-12-03). libwebrtc bounds both sides:
its NACK module asks for a packet a limited number of times, spaced by the round trip,
and its sender does not resend a packet within a round trip of resending it.

- :class:`BoundedNackGenerator` asks for a missing packet when its gap appears and again
  at most every ``retry_s``, at most ``max_nacks`` times. Our video jitter buffer gives up
  on a hole after 0.5 s anyway (``rtc.VIDEO_HOLE_WAIT_S``) and asks for a keyframe.
- a sender skips a packet it resent less than a round trip ago (and less than
  ``RESEND_MIN_INTERVAL_S``), wrapping ``RTCRtpSender._retransmit``.

:func:`use_bounded_nacks` installs both for receivers and senders created from now on
(the mixer's and the agents' peers). ``SYNCCLASS_NACK=stock`` keeps aiortc's behaviour
for side-by-side measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import aiortc.rtcrtpreceiver
from aiortc import RTCRtpSender
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add, uint16_gt

NACK_RETRY_S = 0.15
"""Shortest interval between two NACKs of one packet, s."""
NACK_MAX = 3
"""NACKs per missing packet at most."""
RESEND_MIN_INTERVAL_S = 0.1
"""A sender resends one packet at most once per round trip, and never more often than this."""
TRACKED = 128
"""Missing packets older than this many sequence numbers are forgotten (aiortc 1.16's
``RTP_HISTORY_SIZE``: the sender cannot resend them anyway)."""

_StockNackGenerator = aiortc.rtcrtpreceiver.NackGenerator
_stock_retransmit = RTCRtpSender._retransmit


class BoundedNackGenerator:
    """Drop-in for aiortc 1.16's ``NackGenerator``: the receiver calls :meth:`add` for each
    video packet and, when it returns True, sends a NACK listing :attr:`missing`. Here
    ``missing`` holds only the packets due for a NACK now: those whose gap just appeared
    and those last asked for ``retry_s`` ago or more, each at most ``max_nacks`` times."""

    def __init__(self, retry_s: float = NACK_RETRY_S, max_nacks: int = NACK_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_s = retry_s
        self.max_nacks = max_nacks
        self.clock = clock
        self.max_seq: int | None = None
        self._lost: dict[int, list[float]] = {}
        """Missing sequence number still to be asked for → [time of its last NACK, NACKs
        so far]."""
        self.missing: set[int] = set()
        """What the next NACK asks for (read by aiortc right after :meth:`add`)."""
        self.nacked = 0
        """Sequence numbers asked for so far (each NACK of each packet counts)."""

    def add(self, packet: RtpPacket) -> bool:
        seq = packet.sequence_number
        if self.max_seq is None:
            self.max_seq = seq
            return False
        if uint16_gt(seq, self.max_seq):
            gap = uint16_add(self.max_seq, 1)
            if uint16_gt(uint16_add(seq, -TRACKED), gap):  # a jump: only the last ones count
                gap = uint16_add(seq, -TRACKED)
            while uint16_gt(seq, gap):
                self._lost[gap] = [-math.inf, 0.0]
                gap = uint16_add(gap, 1)
            self.max_seq = seq
            oldest = uint16_add(seq, -TRACKED)
            for old in [s for s in self._lost if uint16_gt(oldest, s)]:
                del self._lost[old]
        else:
            self._lost.pop(seq, None)
        if not self._lost:
            self.missing = set()
            return False
        now = self.clock()
        due = set()
        for s, state in self._lost.items():
            if state[1] < self.max_nacks and now - state[0] >= self.retry_s:
                state[0] = now
                state[1] += 1
                due.add(s)
        # A packet asked for max_nacks times is never asked for again: forget it now, so
        # that this per-packet loop only walks packets that may still be due.
        for s in [s for s in due if self._lost[s][1] >= self.max_nacks]:
            del self._lost[s]
        self.missing = due
        self.nacked += len(due)
        return bool(due)


async def _bounded_retransmit(self: RTCRtpSender, sequence_number: int) -> None:
    """``RTCRtpSender._retransmit`` that skips a packet resent less than a round trip ago."""
    resent: dict[int, float] | None = getattr(self, "_syncclass_resent", None)
    if resent is None:
        resent = self._syncclass_resent = {}  # type: ignore[attr-defined]
    now = time.monotonic()
    rtt = getattr(self, "_RTCRtpSender__rtt", None) or 0.0
    last = resent.get(sequence_number)
    if last is not None and now - last < max(RESEND_MIN_INTERVAL_S, rtt):
        self._syncclass_resends_skipped = (  # type: ignore[attr-defined]
            getattr(self, "_syncclass_resends_skipped", 0) + 1)
        return
    resent[sequence_number] = now
    if len(resent) > 2 * TRACKED:
        for seq in sorted(resent, key=resent.__getitem__)[:TRACKED]:
            del resent[seq]
    await _stock_retransmit(self, sequence_number)


def use_bounded_nacks() -> None:
    """Bounded NACKs in receivers and bounded resends in senders created from now on."""
    aiortc.rtcrtpreceiver.NackGenerator = BoundedNackGenerator  # type: ignore[misc,assignment]
    RTCRtpSender._retransmit = _bounded_retransmit  # type: ignore[method-assign]


def use_stock_nacks() -> None:
    """Undo :func:`use_bounded_nacks`."""
    aiortc.rtcrtpreceiver.NackGenerator = _StockNackGenerator  # type: ignore[misc]
    RTCRtpSender._retransmit = _stock_retransmit  # type: ignore[method-assign]
