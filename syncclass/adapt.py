"""Adapting video to thin rural links: bandwidth estimate → encoder settings (pure policy).

A rural classroom's uplink may be capped at 1 Mbit/s or 512 kbit/s, and so may its downlink.
Sending more than fits fills the bottleneck's queue: delay grows, packets are dropped,
receivers ask for keyframes, and the picture freezes. So every H.264 stream we send follows
an estimate of what its link carries. This module is the policy, free of I/O; the agents
and the mixer feed it RTCP feedback and apply what it returns to their encoders
(:class:`syncclass.codec.H264Encoder`).

**Estimate** (:class:`RateController`, after the IETF GCC draft, draft-ietf-rmcat-gcc-02):
the target is the smaller of

- the *delay-based* estimate: the receiver's REMB (aiortc's receiver runs a remote bitrate
  estimator on abs-send-time and sends REMB; :func:`syncclass.rtc.observe_rtcp_feedback`
  reads it), and
- a *loss-based* estimate from RTCP receiver reports: loss above 10 % cuts it by
  ``(1 - loss / 2)``; loss below 2 % raises it by 5 % per report; in between it holds,

clamped to ``[min_bitrate_kbps, configured bitrate]``.

**Ladder** (:func:`choose_rung`): bitrate first, then resolution, then frame rate. A rung
is a scale of the source size and a fraction of its frame rate; the encoder stays on the
largest rung that gets at least ``down_bits_per_pixel`` bits per pixel (0.05 by default:
at 15 fps that is 691 kbit/s for 1280x720, 389 for 960x540, 173 for 640x360 — close to
libwebrtc's minimum bitrates for those simulcast layers) and steps back up one rung only
when the next larger one would get ``up_bits_per_pixel`` (0.08) — a hysteresis band so a
noisy estimate does not flip the resolution.

**Applying changes** (:class:`EncoderAdapter`): libx264 as opened by PyAV does not take a
new bitrate on an open context (measured: setting ``bit_rate`` after ``open()`` had no
effect), so every change reopens the encoder and costs an IDR. Hence decreases apply at
once when they are worth it (≥ 10 % or a rung change, at most once per ``min_change_s``);
increases need ≥ 20 % and wait ``up_hold_s`` of stable estimates.

**Downlink: two renditions per view** (:class:`RenditionSelector`). The mixer encodes each
view once and sends the same packets to every classroom showing it, so one classroom on a
thin downlink cannot lower that stream for everyone. Instead a view gets, while any of its
subscribers needs it, a second *low* rendition: the same composed picture encoded once more
by a second encoder at a smaller size (the ladder without its full-size rung) and a bitrate
that follows the weakest of its subscribers (at most half the view's bitrate). All
poor-link subscribers of that view share it: at most two encodes per view, whatever the
number of classrooms. Each subscriber's own estimate picks its rendition with hysteresis —
down when its target falls below 75 % of what the high rendition really sends (measured,
not configured: content often needs less, and only what is sent has to fit), back up only
after ``probe_interval_s`` of a clean link. That is a *probe*: REMB can only grow to about
1.5x what a receiver gets, so a subscriber fed the low rendition never reports room for the
high one; the probe sends it the high one, and if the REMB falls (overuse) or loss exceeds
10 % while the estimate is short of it, the subscriber goes back down and the next probe
waits twice as long, up to ``probe_max_interval_s``. The mixer switches a subscriber only
at a keyframe of the rendition it moves to, so its decoder never sees a P-frame of a stream
it has not started. The recording always takes the high rendition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Rendition = Literal["high", "low"]


@dataclass(frozen=True)
class LinkFeedback:
    """What one RTCP compound packet told a sender about its link (``None``: not in it)."""

    remb_kbps: float | None = None
    """Receiver Estimated Maximum Bitrate for our stream, kbit/s."""
    fraction_lost: float | None = None
    """Receiver report's fraction of our packets lost since its previous report, 0..1."""
    rtt_ms: float | None = None
    """Round-trip time (smoothed, from SR/RR timestamps), ms."""
    estimate_kbps: float | None = None
    """This stream's share of the sender-side estimate (transport-wide feedback,
    :mod:`syncclass.transportcc`), kbit/s of encoder output."""
    estimate_probing: bool = False
    """Whether that estimate is still in its fast start (no congestion seen yet)."""


@dataclass(frozen=True)
class AdaptPolicy:
    """Knobs of the adaptation policy (see the module docstring for the reasoning)."""

    min_bitrate_kbps: float = 100.0
    """The estimate never goes below this, kbit/s."""
    down_bits_per_pixel: float = 0.05
    """Leave a rung when its bits per pixel per frame fall below this."""
    up_bits_per_pixel: float = 0.08
    """Go up to a rung only when it would get at least this many bits per pixel."""
    high_loss: float = 0.10
    """Receiver-reported loss fraction above which the loss-based estimate drops."""
    low_loss: float = 0.02
    """Loss fraction below which the loss-based estimate grows."""
    loss_holdoff_s: float = 1.5
    """Shortest interval between two loss-based cuts, s."""
    loss_increase: float = 1.05
    """Growth factor of the loss-based estimate per clean receiver report."""
    remb_max_age_s: float = 10.0
    """A REMB older than this no longer limits the estimate, s."""
    remb_binding_ratio: float = 0.9
    """REMB starts limiting a stream's target once it falls below this fraction of what
    the stream sends, with loss or queueing (see :attr:`RateController.remb_binding`)."""
    queue_rtt_ms: float = 50.0
    """A round trip this much above the smallest seen means a queue on the path, ms."""
    min_change_s: float = 1.0
    """Shortest interval between two encoder changes, s (each costs an IDR)."""
    down_step: float = 0.10
    """A bitrate decrease smaller than this fraction is not worth a reopen."""
    up_step: float = 0.20
    """A bitrate increase smaller than this fraction is not worth a reopen."""
    up_hold_s: float = 4.0
    """An increase must have been wanted for this long before it applies, s."""
    switch_down_ratio: float = 0.75
    """A subscriber moves to the low rendition when its target falls below this fraction
    of what the high rendition sends (a spurious overuse on a good link gives a REMB of
    0.85x the arriving rate, which must not move anyone)."""
    low_max_ratio: float = 0.5
    """The low rendition's bitrate is at most this fraction of the high one's."""
    up_room_ratio: float = 1.1
    """With a sender-side estimate, a subscriber moves up to the high rendition once the
    estimate is at least this multiple of what the high one sends (packet headers, content
    that varies): moving up at less (``switch_down_ratio``'s 0.75) sent a 1 Mbit/s link
    1.2 Mbit/s and dropped ~200 packets, 3 s of freeze (measured,
    ``benchmarks/uplink.py --caps 1024 --modes gcc``)."""
    down_hold_s: float = 1.5
    """A subscriber's estimate must stay too low this long before it moves down (at once
    if loss exceeds ``high_loss``): a spurious overuse on a busy machine must not move it."""
    probe_interval_s: float = 20.0
    """Time on the low rendition with a clean link before trying the high one again, s."""
    probe_max_interval_s: float = 160.0
    """Longest wait between probes after failed ones, s."""
    probe_window_s: float = 6.0
    """A probe that sees the estimate fall within this time failed, s."""
    estimate_max_age_s: float = 2.0
    """A sender-side estimate older than this no longer sets the target, s (the peer
    stopped sending feedback: the REMB/loss rules take over)."""
    estimate_falling_hold_s: float = 1.0
    """A cut of the sender-side estimate counts as congestion this long, s."""


GCC_UP_HOLD_S = 2.0
"""``AdaptPolicy.up_hold_s`` with a sender-side estimate (``estimator: gcc``): it is
already smoothed and bounded by what the receiver got, and its fast start should reach
the encoder in seconds; REMB needs the longer hold against its spurious overuse."""
GCC_DOWN_HOLD_S = 0.5
"""``AdaptPolicy.down_hold_s`` with a sender-side estimate: its cuts come from a growing
queue or loss, not from a busy machine's noise, and every second on a rendition the link
cannot carry fills its queue."""


def estimate_ceiling_kbps(*stream_kbps: float) -> float:
    """Ceiling of a sender-side link estimate (``GccConfig.max_kbps``), kbit/s: twice the
    largest configured stream, at least libwebrtc's 2500. A subscriber on a view's low
    rendition moves up once its estimate exceeds ``up_room_ratio`` x what the high one
    sends: a ceiling at a 720p view's own 2500 kbit/s kept every subscriber of a LAN on
    the low rendition (measured, ``benchmarks/capacity.py --estimators remb,gcc``)."""
    return max(2500.0, 2.0 * max(stream_kbps, default=0.0))


GCC_LOW_MAX_RATIO = 0.85
"""``AdaptPolicy.low_max_ratio`` with a sender-side estimate: the estimate is bounded by
1.5x what arrives, so what the low rendition carries is how far it can see; at 0.85 of
the high rendition it can show room for the high one (``up_room_ratio``) on a link that
has it, with no blind probe (at 0.5 it could never see past 0.76x)."""


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: ``scale`` of the source width and height, ``fps_factor`` of
    its frame rate."""

    scale: float
    fps_factor: float = 1.0


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung(1.0),
    Rung(0.75),
    Rung(0.5),
    Rung(0.5, 0.5),
    Rung(0.25, 0.5),
)
"""Largest first: full size, 3/4, 1/2, then 1/2 at half the frame rate, then 1/4."""


@dataclass(frozen=True)
class EncoderSettings:
    """What an encoder should produce: ``width`` x ``height`` pixels (even) at ``fps``
    frames/s and ``bitrate_kbps`` kbit/s."""

    bitrate_kbps: int
    width: int
    height: int
    fps: float


def rung_size(width: int, height: int, rung: Rung) -> tuple[int, int]:
    """The even pixel size of ``rung`` for a ``width`` x ``height`` source (≥ 16x16)."""
    w = max(16, round(width * rung.scale / 2) * 2)
    h = max(16, round(height * rung.scale / 2) * 2)
    return min(w, width - width % 2), min(h, height - height % 2)


def bits_per_pixel(bitrate_kbps: float, width: int, height: int, fps: float) -> float:
    """Bits per pixel per frame at ``bitrate_kbps`` kbit/s, ``width`` x ``height``, ``fps``."""
    return bitrate_kbps * 1000.0 / (width * height * fps)


def choose_rung(
    bitrate_kbps: float,
    width: int,
    height: int,
    fps: float,
    current: int,
    policy: AdaptPolicy = AdaptPolicy(),
    ladder: tuple[Rung, ...] = DEFAULT_LADDER,
) -> int:
    """Index into ``ladder`` for a ``width`` x ``height`` @ ``fps`` source at
    ``bitrate_kbps``, starting from rung ``current`` (hysteresis: down below
    ``down_bits_per_pixel``, up one rung at a time at ``up_bits_per_pixel``)."""
    if not ladder:
        raise ValueError("the ladder has no rungs")
    current = min(max(current, 0), len(ladder) - 1)

    def bpp(i: int) -> float:
        w, h = rung_size(width, height, ladder[i])
        return bits_per_pixel(bitrate_kbps, w, h, fps * ladder[i].fps_factor)

    if bpp(current) < policy.down_bits_per_pixel:
        i = current
        while i + 1 < len(ladder) and bpp(i) < policy.down_bits_per_pixel:
            i += 1
        return i
    if current > 0 and bpp(current - 1) >= policy.up_bits_per_pixel:
        return current - 1
    return current


@dataclass
class RateController:
    """The target bitrate of one stream from its receiver's feedback (kbit/s)."""

    max_kbps: float
    """The configured bitrate: never more."""
    policy: AdaptPolicy = field(default_factory=AdaptPolicy)
    loss_kbps: float = math.inf
    """The loss-based estimate, kbit/s."""
    remb_kbps: float | None = None
    """The last REMB, kbit/s."""
    remb_at_s: float = -math.inf
    remb_falling: bool = False
    """Whether the last REMB was lower than the one before (the receiver saw overuse)."""
    remb_binding: bool = False
    """Whether REMB limits the target. It does once a REMB below ``remb_binding_ratio`` of
    what the stream really sends comes with evidence of a queue on the path: loss of at
    least ``low_loss`` or a round trip ``queue_rtt_ms`` above the smallest seen (or at the
    first REMB when what is sent is not known). aiortc's receiver answers an overuse
    with 0.85x the arriving rate, and on a busy machine it sees overuse that is not there
    (measured: agents on a clean link cut from 1500 to 1080-1300 kbit/s 1-2 s after
    joining, with no loss, at the cost of two IDRs and 8 s of a poorer picture); a real
    bottleneck fills its queue (the round trip grows) and then drops packets."""
    last_loss: float = 0.0
    """The last receiver-reported loss fraction."""
    rtt_ms: float | None = None
    rtt_min_ms: float | None = None
    """The smallest round trip seen: the path without queueing, ms."""
    loss_cut_at_s: float = -math.inf
    estimate_kbps: float | None = None
    """The last sender-side estimate (transport-wide feedback), kbit/s. While fresh
    (``estimate_max_age_s``) it *is* the target: it already holds delay and loss."""
    estimate_at_s: float = -math.inf
    estimate_probing: bool = False
    """Whether that estimate is still in its fast start."""
    estimate_falling: bool = False
    """Whether the sender-side estimate was cut lately (``estimate_falling_hold_s``)."""
    estimate_cut_at_s: float = -math.inf

    def __post_init__(self) -> None:
        if self.max_kbps <= 0:
            raise ValueError(f"max_kbps must be positive, got {self.max_kbps}")
        self.loss_kbps = min(self.loss_kbps, self.max_kbps)

    def target_kbps(self, now_s: float) -> float:
        """The current target at monotonic time ``now_s`` (s), kbit/s."""
        if self.has_estimate(now_s):
            assert self.estimate_kbps is not None
            return max(self.policy.min_bitrate_kbps, min(self.max_kbps, self.estimate_kbps))
        target = self.loss_kbps
        if (self.remb_binding and self.remb_kbps is not None
                and now_s - self.remb_at_s <= self.policy.remb_max_age_s):
            target = min(target, self.remb_kbps)
        return max(self.policy.min_bitrate_kbps, min(self.max_kbps, target))

    def on_feedback(self, feedback: LinkFeedback, now_s: float,
                    sent_kbps: float | None = None) -> None:
        """Take one RTCP feedback received at monotonic time ``now_s`` (s); ``sent_kbps``
        is what the stream really sent lately (kbit/s), if known: under heavy loss what got
        through, ``sent × (1 - loss)``, bounds the estimate at once."""
        if feedback.estimate_kbps is not None:
            if feedback.estimate_kbps < 0:
                raise ValueError(f"estimate must not be negative, got {feedback.estimate_kbps}")
            previous = self.estimate_kbps
            if previous is not None and feedback.estimate_kbps < previous * 0.9:
                self.estimate_cut_at_s = now_s
            self.estimate_kbps = feedback.estimate_kbps
            self.estimate_at_s = now_s
            self.estimate_probing = feedback.estimate_probing
        self.estimate_falling = (now_s - self.estimate_cut_at_s
                                 <= self.policy.estimate_falling_hold_s)
        if feedback.rtt_ms is not None:
            self.rtt_ms = feedback.rtt_ms
            self.rtt_min_ms = min(self.rtt_min_ms or math.inf, feedback.rtt_ms)
        if feedback.remb_kbps is not None:
            if feedback.remb_kbps < 0:
                raise ValueError(f"REMB must not be negative, got {feedback.remb_kbps}")
            previous = self.remb_kbps
            self.remb_falling = previous is not None and feedback.remb_kbps < previous * 0.97
            self.remb_kbps = feedback.remb_kbps
            self.remb_at_s = now_s
            if not sent_kbps:
                self.remb_binding = True
        if feedback.fraction_lost is not None:
            self._on_loss(feedback.fraction_lost, now_s, sent_kbps)
        if not self.remb_binding and self.remb_kbps is not None and sent_kbps:
            p = self.policy
            queued = (self.rtt_ms is not None and self.rtt_min_ms is not None
                      and self.rtt_ms - self.rtt_min_ms >= p.queue_rtt_ms)
            self.remb_binding = (self.remb_kbps < sent_kbps * p.remb_binding_ratio
                                 and now_s - self.remb_at_s <= p.remb_max_age_s
                                 and (self.last_loss >= p.low_loss or queued))

    def has_estimate(self, now_s: float) -> bool:
        """Whether a sender-side estimate came within ``estimate_max_age_s``."""
        return (self.estimate_kbps is not None
                and now_s - self.estimate_at_s <= self.policy.estimate_max_age_s)

    def _on_loss(self, loss: float, now_s: float, sent_kbps: float | None) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"fraction_lost must be in [0, 1], got {loss}")
        self.last_loss = loss
        p = self.policy
        if loss > p.high_loss:
            # The next report still counts losses from before a cut (the bottleneck's
            # queue drains first): cut at most once per loss_holdoff_s.
            if now_s - self.loss_cut_at_s < p.loss_holdoff_s:
                return
            base = min(self.loss_kbps, self.target_kbps(now_s))
            cut = base * (1.0 - loss / 2.0)
            if sent_kbps:
                cut = min(cut, sent_kbps * (1.0 - loss))
            self.loss_kbps = max(p.min_bitrate_kbps, cut)
            self.loss_cut_at_s = now_s
        elif loss < p.low_loss:
            self.loss_kbps = min(self.max_kbps, self.loss_kbps * p.loss_increase + 1.0)


@dataclass
class EncoderAdapter:
    """Turns a target bitrate into encoder settings for a ``width`` x ``height`` @ ``fps``
    source, and decides when a change is worth an encoder reopen.

    ``max_kbps`` is the configured bitrate; ``ladder`` the rungs this encoder may use.
    :meth:`update` returns the settings to apply now, or ``None`` to keep the current ones.
    """

    width: int
    height: int
    fps: float
    max_kbps: float
    policy: AdaptPolicy = field(default_factory=AdaptPolicy)
    ladder: tuple[Rung, ...] = DEFAULT_LADDER
    rung: int = 0
    current: EncoderSettings | None = None
    changed_at_s: float = -math.inf
    _up_since_s: float | None = None
    changes: int = 0
    """Settings changes returned so far."""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ValueError(f"bad source {self.width}x{self.height} @ {self.fps} fps")
        w, h = rung_size(self.width, self.height, self.ladder[self.rung])
        self.current = EncoderSettings(int(self.max_kbps), w, h,
                                       self.fps * self.ladder[self.rung].fps_factor)

    def _settings(self, kbps: float, rung: int) -> EncoderSettings:
        w, h = rung_size(self.width, self.height, self.ladder[rung])
        kbps = min(self.max_kbps, max(self.policy.min_bitrate_kbps, kbps))
        return EncoderSettings(int(kbps // 10 * 10) or int(kbps), w, h,
                               self.fps * self.ladder[rung].fps_factor)

    def update(self, target_kbps: float, now_s: float) -> EncoderSettings | None:
        """The settings for ``target_kbps`` (kbit/s) at monotonic ``now_s`` (s), if they
        should change now; else ``None``."""
        cur = self.current
        assert cur is not None
        p = self.policy
        rung = choose_rung(target_kbps, self.width, self.height, self.fps, self.rung,
                           p, self.ladder)
        want = self._settings(target_kbps, rung)
        if want == cur:
            self._up_since_s = None
            return None
        if rung > self.rung or (rung == self.rung and want.bitrate_kbps < cur.bitrate_kbps):
            self._up_since_s = None
            worth = rung != self.rung or want.bitrate_kbps <= cur.bitrate_kbps * (1 - p.down_step)
            if worth and now_s - self.changed_at_s >= p.min_change_s:
                return self._apply(want, rung, now_s)
            return None
        worth = (rung != self.rung or want.bitrate_kbps >= cur.bitrate_kbps * (1 + p.up_step)
                 or want.bitrate_kbps >= int(self.max_kbps))
        if not worth:
            self._up_since_s = None
            return None
        if self._up_since_s is None:
            self._up_since_s = now_s
        if now_s - self._up_since_s >= p.up_hold_s and now_s - self.changed_at_s >= p.min_change_s:
            return self._apply(want, rung, now_s)
        return None

    def reset(self, target_kbps: float, now_s: float) -> EncoderSettings:
        """Start at the settings for ``target_kbps`` (kbit/s), whatever the current ones."""
        rung = 0
        while (nxt := choose_rung(target_kbps, self.width, self.height, self.fps, rung,
                                  self.policy, self.ladder)) > rung:
            rung = nxt
        return self._apply(self._settings(target_kbps, rung), rung, now_s)

    def _apply(self, settings: EncoderSettings, rung: int, now_s: float) -> EncoderSettings:
        self.current = settings
        self.rung = rung
        self.changed_at_s = now_s
        self._up_since_s = None
        self.changes += 1
        return settings


LOW_LADDER: tuple[Rung, ...] = DEFAULT_LADDER[1:]
"""Rungs of a view's low rendition: never the full size."""


@dataclass
class RenditionSelector:
    """Which rendition of a view one subscriber gets, from its own link estimate.

    :meth:`choose` takes the subscriber's :class:`RateController` and the rate the high
    rendition really sends now (kbit/s, measured: a view's content often needs less than
    its configured bitrate, and only what is sent has to fit). It returns the rendition
    the subscriber should be on; the caller moves it at that rendition's next keyframe.
    """

    policy: AdaptPolicy = field(default_factory=AdaptPolicy)
    rendition: Rendition = "high"
    since_s: float = 0.0
    probe_interval_s: float = 0.0
    probing_since_s: float | None = None
    """Set while a probe of the high rendition is on."""
    switches: int = 0
    failed_probes: int = 0
    low_since_s: float | None = None
    """Since when the estimate has been too low for the high rendition."""
    high_ok_since_s: float | None = None
    """On the low rendition: since when a sender-side estimate has had room for the high."""

    def __post_init__(self) -> None:
        if self.probe_interval_s <= 0:
            self.probe_interval_s = self.policy.probe_interval_s

    def choose(self, controller: RateController, high_sent_kbps: float,
               now_s: float) -> Rendition:
        """Rendition for a subscriber whose link estimate is ``controller`` at monotonic
        ``now_s`` (s), the high rendition sending ``high_sent_kbps`` kbit/s."""
        p = self.policy
        target = controller.target_kbps(now_s)
        too_low = target < high_sent_kbps * p.switch_down_ratio
        estimated = controller.has_estimate(now_s)  # a fresh sender-side estimate
        # What moves one *up*: the link estimate (not the target, which stops at the
        # configured bitrate) has room for the high rendition.
        room = (estimated and controller.estimate_kbps is not None
                and controller.estimate_kbps >= high_sent_kbps * p.up_room_ratio)
        if too_low and estimated and controller.estimate_probing:
            # A sender-side estimate in its fast start grows from 300 kbit/s on any link:
            # only congestion it sees (its first overuse or loss) says the link is thin.
            # This holds a subscriber *on* the high rendition; it never moves one up.
            too_low = False
        if not too_low:
            self.low_since_s = None
        elif self.low_since_s is None:
            self.low_since_s = now_s
        if self.rendition == "high":
            if self.probing_since_s is not None:
                return self._probe(controller, too_low, now_s)
            held = self.low_since_s is not None and now_s - self.low_since_s >= p.down_hold_s
            if too_low and (held or controller.last_loss > p.high_loss):
                return self._switch("low", now_s)
            return "high"
        clean = controller.last_loss < p.low_loss
        if room and clean:
            # A sender-side estimate is bounded by 1.5x what arrived: when it exceeds the
            # high rendition's rate the link has shown room for it, no need to wait for
            # the periodic probe (a subscriber starts on low with ``estimator: gcc``).
            if self.high_ok_since_s is None:
                self.high_ok_since_s = now_s
            elif now_s - self.high_ok_since_s >= p.up_hold_s:
                self.high_ok_since_s = None
                self.probing_since_s = now_s
                return self._switch("high", now_s)
        else:
            self.high_ok_since_s = None
        if estimated:
            # A sender-side estimate is the probe: it grows with what the low rendition
            # carries (which follows it up to ``low_max_ratio`` of the high one) and shows
            # room for the high rendition above. A blind switch to the high one would only
            # fill a link the estimate already measured (a freeze every probe).
            self.since_s = now_s
        elif not clean:
            # Loss on the low rendition: the next probe waits for a clean stretch.
            self.since_s = max(self.since_s, now_s - self.probe_interval_s / 2)
        elif now_s - self.since_s >= self.probe_interval_s:
            self.probing_since_s = now_s
            return self._switch("high", now_s)
        return "low"

    def _probe(self, controller: RateController, too_low: bool, now_s: float) -> Rendition:
        # After the switch the receiver's REMB starts from what the low rendition allowed
        # and climbs (~8 %/s); only a *falling* REMB or heavy loss says the link is full.
        p = self.policy
        assert self.probing_since_s is not None
        congested = (controller.last_loss > p.high_loss or controller.remb_falling
                     or controller.estimate_falling)
        elapsed = now_s - self.probing_since_s
        if too_low and (congested or elapsed > 3 * p.probe_window_s):
            self.probing_since_s = None
            self.failed_probes += 1
            self.probe_interval_s = min(p.probe_max_interval_s, self.probe_interval_s * 2)
            return self._switch("low", now_s)
        if not too_low and elapsed >= p.probe_window_s:
            self.probing_since_s = None  # the probe held: the link carries the high one
            self.probe_interval_s = p.probe_interval_s
        return "high"

    def _switch(self, rendition: Rendition, now_s: float) -> Rendition:
        self.rendition = rendition
        self.since_s = now_s
        self.switches += 1
        return rendition


@dataclass
class RateMeter:
    """Bitrate of a byte counter over a sliding window (``window_s`` seconds)."""

    window_s: float = 2.0
    _samples: list[tuple[float, int]] = field(default_factory=list)

    def add(self, total_bytes: int, now_s: float) -> None:
        """Record the counter's value ``total_bytes`` at monotonic ``now_s`` (s)."""
        self._samples.append((now_s, total_bytes))
        while len(self._samples) > 2 and now_s - self._samples[1][0] >= self.window_s:
            self._samples.pop(0)

    def kbps(self) -> float:
        """kbit/s between the oldest and newest samples (0 with fewer than two)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) * 8 / 1000 / (t1 - t0) if t1 > t0 else 0.0


def low_rendition_target(targets_kbps: list[float], high_kbps: float,
                         policy: AdaptPolicy = AdaptPolicy()) -> float:
    """Bitrate for a view's low rendition: the weakest subscriber's target, clamped to
    ``[min_bitrate_kbps, low_max_ratio × high_kbps]`` (kbit/s)."""
    cap = max(policy.min_bitrate_kbps, high_kbps * policy.low_max_ratio)
    if not targets_kbps:
        return cap
    return max(policy.min_bitrate_kbps, min(cap, min(targets_kbps)))
