"""A view's low rendition for classrooms on thin downlinks (policy: :mod:`syncclass.adapt`).

Each view is encoded once (the *high* rendition) and its packets go to every classroom
showing it. While a subscriber's link estimate says the high rendition does not fit, the
view is encoded once more, smaller and at a lower bitrate (the *low* rendition), and that
subscriber — with every other poor-link subscriber of the view — gets those packets
instead. A subscriber moves between renditions only at a keyframe of the one it moves to.

Threads: :meth:`ViewRenditions.encode` runs in the view's encode worker thread;
everything else runs on the event loop, and :meth:`ViewRenditions.tick` (which may create
or drop the low encoder) only between two encodes (the compose loop calls it after fan-out).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import av

from syncclass.adapt import (
    LOW_LADDER,
    AdaptPolicy,
    EncoderAdapter,
    LinkFeedback,
    RateController,
    RateMeter,
    Rendition,
    RenditionSelector,
    low_rendition_target,
)
from syncclass.codec import H264Encoder
from syncclass.config import MediaConfig
from syncclass.rtc import PacketQueueTrack

logger = logging.getLogger(__name__)

LOW_KEYFRAME_MIN_INTERVAL_S = 1.5
"""Requested keyframes of a low rendition come at most this often, s: its subscribers are
on thin links, where a keyframe fills ~0.5 s of the link, and losses there make their
decoders ask again and again (measured on a 384 kbit/s link, four runs of ~18 s each:
16-21 keyframes for 13-70 requests with the views' 0.5 s; 11-12 for 23-85 with 1.5 s)."""
LOW_IDLE_CLOSE_S = 10.0
"""The low encoder is dropped after this long with no subscriber on or bound for it, s."""


@dataclass
class Subscriber:
    """One classroom's downlink for this view."""

    control: RateController
    selector: RenditionSelector
    route: Rendition = "high"
    """Rendition whose packets it gets now."""
    pending: Rendition | None = None
    """Rendition it moves to at that rendition's next keyframe."""
    feedback: int = 0
    """RTCP feedback packets seen."""


@dataclass
class ViewRenditions:
    """High (the view's own encoder) and, when needed, low rendition of one view."""

    name: str
    media: MediaConfig
    high: H264Encoder
    policy: AdaptPolicy = field(default_factory=AdaptPolicy)
    enabled: bool = True
    start_kbps: float | None = None
    """Where a new subscriber's sender-side estimate starts (kbit/s; ``None``: REMB, no
    estimate before feedback)."""
    low: H264Encoder | None = None
    low_adapter: EncoderAdapter | None = None
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    high_meter: RateMeter = field(default_factory=RateMeter)
    low_meter: RateMeter = field(default_factory=RateMeter)
    low_idle_since: float | None = None
    low_encoders_created: int = 0
    switches: int = 0

    def add(self, classroom_id: str) -> None:
        """A classroom subscribed: it starts on the high rendition, or with
        ``start_kbps`` set (a sender-side estimate) and below what the high one needs, on
        the low one: a thin link's queue must not fill with the full view before the
        first feedback says it is thin (measured on a 384 kbit/s link: 4.5 s of a full
        queue and no picture). Its estimate's fast start moves it up within seconds on a
        link with room (:meth:`RenditionSelector.choose`)."""
        now = time.monotonic()
        control = RateController(self.media.bitrate_kbps, self.policy)
        selector = RenditionSelector(self.policy, since_s=now)
        sub = Subscriber(control, selector)
        high_kbps = max(self.high_meter.kbps(), self.media.bitrate_kbps * 0.5)
        if (self.enabled and self.start_kbps is not None
                and self.start_kbps < high_kbps * self.policy.switch_down_ratio):
            control.on_feedback(LinkFeedback(estimate_kbps=self.start_kbps,
                                             estimate_probing=True), now)
            self._ensure_low(self.start_kbps, now)
            assert self.low is not None
            self.low.request_keyframe()
            sub.route = selector.rendition = "low"
        self.subscribers[classroom_id] = sub

    def remove(self, classroom_id: str) -> None:
        self.subscribers.pop(classroom_id, None)

    def feedback(self, classroom_id: str, feedback: LinkFeedback) -> None:
        """RTCP feedback from ``classroom_id`` about this view's stream."""
        sub = self.subscribers.get(classroom_id)
        if sub is not None:
            meter = self.low_meter if sub.route == "low" else self.high_meter
            sub.control.on_feedback(feedback, time.monotonic(), meter.kbps() or None)
            sub.feedback += 1

    def encoder_for(self, classroom_id: str) -> H264Encoder:
        """The encoder whose stream ``classroom_id`` decodes now."""
        sub = self.subscribers.get(classroom_id)
        if sub is not None and sub.route == "low" and self.low is not None:
            return self.low
        return self.high

    def request_keyframe(self, classroom_id: str) -> None:
        """A keyframe for ``classroom_id`` (PLI/FIR, or its queue overflowed)."""
        self.encoder_for(classroom_id).request_keyframe()

    # -- per frame ------------------------------------------------------------------------------
    def encode(self, frame: av.VideoFrame) -> tuple[list[av.Packet], list[av.Packet]]:
        """Encode ``frame`` for both renditions (worker thread): (high, low) packets."""
        high = self.high.encode(frame)
        low = self.low.encode(frame) if self.low is not None else []
        return high, low

    def fan_out(self, high: list[av.Packet], low: list[av.Packet],
                tracks: dict[str, PacketQueueTrack]) -> None:
        """Put each subscriber's rendition into its track, switching at keyframes."""
        packets = {"high": high, "low": low}
        keyframe = {r: any(p.is_keyframe for p in ps) for r, ps in packets.items()}
        for cid, track in tracks.items():
            sub = self.subscribers.get(cid)
            if sub is None:
                for packet in high:
                    track.put(packet)
                continue
            if sub.pending is not None and keyframe[sub.pending]:
                logger.info("view %s -> %s: %s rendition", self.name, cid, sub.pending)
                sub.route, sub.pending = sub.pending, None
                self.switches += 1
            for packet in packets[sub.route]:
                track.put(packet)

    def tick(self, now: float) -> None:
        """Choose renditions from the estimates; create, retune or drop the low encoder.
        Called on the event loop between two encodes."""
        self.high_meter.add(self.high.bytes_out, now)
        if self.low is not None:
            self.low_meter.add(self.low.bytes_out, now)
        if not self.enabled or not self.subscribers:
            return
        high_kbps = max(self.high_meter.kbps(), self.policy.min_bitrate_kbps)
        for sub in self.subscribers.values():
            if sub.feedback == 0:
                continue
            want = sub.selector.choose(sub.control, high_kbps, now)
            if want == sub.route:
                sub.pending = None
            elif want != sub.pending:
                sub.pending = want
                if want == "low":
                    self._ensure_low(sub.control.target_kbps(now), now)
                    assert self.low is not None
                    self.low.request_keyframe()
                else:
                    self.high.request_keyframe()
        self._retune_low(now)

    def _ensure_low(self, target_kbps: float, now: float) -> None:
        if self.low is not None:
            return
        m = self.media
        max_kbps = max(self.policy.min_bitrate_kbps, m.bitrate_kbps * self.policy.low_max_ratio)
        adapter = EncoderAdapter(m.width, m.height, m.fps, max_kbps, self.policy, LOW_LADDER)
        start = adapter.reset(target_kbps, now)
        low = H264Encoder(m.width, m.height, m.fps, start.bitrate_kbps, m.keyframe_interval_s,
                          max(m.keyframe_min_interval_s, LOW_KEYFRAME_MIN_INTERVAL_S),
                          threads=1, name=f"{self.name}-low")
        low.set_output(start.width, start.height, start.fps)
        self.low, self.low_adapter = low, adapter
        self.low_idle_since = None
        self.low_encoders_created += 1
        logger.info("view %s: low rendition on (%dx%d, %d kbps)", self.name, start.width,
                    start.height, start.bitrate_kbps)

    def _retune_low(self, now: float) -> None:
        if self.low is None or self.low_adapter is None:
            return
        users = [s for s in self.subscribers.values() if "low" in (s.route, s.pending)]
        if not users:
            if self.low_idle_since is None:
                self.low_idle_since = now
            elif now - self.low_idle_since > LOW_IDLE_CLOSE_S:
                self.low.close()
                self.low = self.low_adapter = None
                self.low_meter = RateMeter()
                logger.info("view %s: low rendition off", self.name)
            return
        self.low_idle_since = None
        target = low_rendition_target([s.control.target_kbps(now) for s in users],
                                      self.media.bitrate_kbps, self.policy)
        settings = self.low_adapter.update(target, now)
        if settings is not None:
            self.low.bitrate_kbps = settings.bitrate_kbps
            self.low.set_output(settings.width, settings.height, settings.fps)

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "high_sent_kbps": round(self.high_meter.kbps(), 1),
            "low": None if self.low is None else self.low.stats(),
            "low_encoders_created": self.low_encoders_created,
            "switches": self.switches,
            "subscribers": {
                cid: {"route": s.route, "pending": s.pending,
                      "target_kbps": round(s.control.target_kbps(now), 1),
                      "remb_kbps": s.control.remb_kbps, "loss": s.control.last_loss,
                      "estimate_kbps": s.control.estimate_kbps,
                      "rtt_ms": s.control.rtt_ms, "failed_probes": s.selector.failed_probes,
                      "feedback": s.feedback}
                for cid, s in self.subscribers.items()
            },
        }
