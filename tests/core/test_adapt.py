"""The thin-link adaptation policy (syncclass.adapt) and the encoder's run-time changes."""

from __future__ import annotations

import av
import numpy as np
import pytest

from syncclass.adapt import (
    DEFAULT_LADDER,
    LOW_LADDER,
    AdaptPolicy,
    EncoderAdapter,
    LinkFeedback,
    RateController,
    RateMeter,
    RenditionSelector,
    choose_rung,
    low_rendition_target,
    rung_size,
)
from syncclass.codec import H264Encoder


def test_rung_sizes_are_even() -> None:
    assert rung_size(1280, 720, DEFAULT_LADDER[1]) == (960, 540)
    assert rung_size(640, 360, DEFAULT_LADDER[1]) == (480, 270)
    w, h = rung_size(642, 362, DEFAULT_LADDER[2])
    assert w % 2 == 0 and h % 2 == 0


def test_ladder_bitrate_first_then_size_then_fps_with_hysteresis() -> None:
    # 720p @ 15 fps stays full size down to 0.05 bit/pixel = 691 kbit/s.
    assert choose_rung(700, 1280, 720, 15, 0) == 0
    assert choose_rung(680, 1280, 720, 15, 0) == 1
    # 350 kbit/s: 960x540 gets 0.045 < 0.05, 640x360 gets 0.1.
    assert choose_rung(350, 1280, 720, 15, 0) == 2
    # Very low: half size at half frame rate, then quarter size.
    assert choose_rung(100, 1280, 720, 15, 0) == 3
    assert choose_rung(30, 1280, 720, 15, 0) == 4
    # Back up only at 0.08 bit/pixel on the larger rung (1106 kbit/s for 720p), one rung.
    assert choose_rung(1000, 1280, 720, 15, 1) == 1
    assert choose_rung(1200, 1280, 720, 15, 1) == 0
    assert choose_rung(5000, 1280, 720, 15, 3) == 2
    with pytest.raises(ValueError):
        choose_rung(100, 1280, 720, 15, 0, ladder=())


def test_rate_controller_follows_remb_and_loss() -> None:
    c = RateController(1500)
    assert c.target_kbps(0) == 1500
    c.on_feedback(LinkFeedback(remb_kbps=400), 1.0)
    assert c.target_kbps(1.0) == 400
    assert c.target_kbps(20.0) == 1500  # a stale REMB no longer limits
    # Heavy loss: what got through bounds the estimate at once.
    c.on_feedback(LinkFeedback(fraction_lost=0.5), 2.0, sent_kbps=900)
    assert c.loss_kbps == pytest.approx(400 * 0.75)  # min(400 x (1 - 0.5 / 2), 900 x 0.5)
    assert c.target_kbps(2.0) == pytest.approx(300)
    c.on_feedback(LinkFeedback(remb_kbps=2000), 2.1)
    assert c.target_kbps(2.1) == pytest.approx(300)
    # The next report within the hold-off does not cut again.
    c.on_feedback(LinkFeedback(fraction_lost=0.5), 2.5)
    assert c.loss_kbps == pytest.approx(300)
    # Clean reports raise it 5 % each, never above the configured bitrate or below min.
    c.on_feedback(LinkFeedback(fraction_lost=0.0), 3.0)
    assert c.loss_kbps == pytest.approx(316)
    assert c.last_loss == 0.0
    c.on_feedback(LinkFeedback(remb_kbps=10), 4.0)
    assert c.target_kbps(4.0) == AdaptPolicy().min_bitrate_kbps
    with pytest.raises(ValueError):
        c.on_feedback(LinkFeedback(fraction_lost=1.5), 5.0)
    with pytest.raises(ValueError):
        RateController(0)


def test_encoder_adapter_cuts_at_once_and_raises_after_a_hold() -> None:
    a = EncoderAdapter(640, 360, 15, 1500)
    assert a.current is not None and a.current.bitrate_kbps == 1500
    s = a.update(400, 0.0)
    assert s is not None and (s.bitrate_kbps, s.width, s.height, s.fps) == (400, 640, 360, 15)
    assert a.update(380, 0.5) is None  # a 5 % change is not worth an IDR
    s = a.update(150, 1.5)  # 640x360 needs 173: down a rung
    assert s is not None and (s.width, s.height) == (480, 270)
    assert a.update(100, 1.8) is None  # at most one change per min_change_s
    # Up: wanted for up_hold_s first.
    assert a.update(300, 3.0) is None
    assert a.update(300, 6.0) is None
    s = a.update(300, 7.1)
    assert s is not None and s.bitrate_kbps == 300 and (s.width, s.height) == (640, 360)
    assert a.changes == 3
    r = a.reset(90, 8.0)  # 320x180 still gets 0.1 bit/pixel at 100 kbit/s, 15 fps
    assert (r.bitrate_kbps, r.width, r.height, r.fps) == (100, 320, 180, 15)
    r = EncoderAdapter(1280, 720, 15, 1500).reset(100, 0.0)
    assert (r.width, r.height, r.fps) == (640, 360, 7.5)


def test_renditions_switch_down_with_hold_and_probe_back_up() -> None:
    p = AdaptPolicy()
    sel = RenditionSelector(p, since_s=0.0)
    c = RateController(1200, p)
    c.on_feedback(LinkFeedback(remb_kbps=300), 0.0)
    assert sel.choose(c, 800, 0.0) == "high"  # not yet: a spurious overuse must not move
    c.on_feedback(LinkFeedback(remb_kbps=300), 1.0)
    assert sel.choose(c, 800, 1.6) == "low"
    # Low and clean: a probe after probe_interval_s.
    c.on_feedback(LinkFeedback(remb_kbps=450, fraction_lost=0.0), 10.0)
    assert sel.choose(c, 800, 10.0) == "low"
    assert sel.choose(c, 800, 21.7) == "high"
    assert sel.probing_since_s == 21.7
    # The REMB climbs from the low rendition's level: not a failure.
    c.on_feedback(LinkFeedback(remb_kbps=500), 22.0)
    assert sel.choose(c, 800, 22.0) == "high"
    # It falls (overuse) while short of the high rendition: the probe failed.
    c.on_feedback(LinkFeedback(remb_kbps=420), 23.0)
    assert sel.choose(c, 800, 23.0) == "low"
    assert sel.failed_probes == 1 and sel.probe_interval_s == 2 * p.probe_interval_s
    # Heavy loss moves a subscriber down at once.
    sel2 = RenditionSelector(p)
    c2 = RateController(1200, p)
    c2.on_feedback(LinkFeedback(fraction_lost=0.4), 0.0, sent_kbps=800)
    assert sel2.choose(c2, 800, 0.0) == "low"
    # A good link stays high.
    sel3 = RenditionSelector(p)
    c3 = RateController(1200, p)
    c3.on_feedback(LinkFeedback(remb_kbps=1100, fraction_lost=0.0), 0.0)
    assert sel3.choose(c3, 800, 5.0) == "high"


def test_low_rendition_follows_the_weakest_subscriber() -> None:
    assert low_rendition_target([400, 250], 1200) == 250
    assert low_rendition_target([2000], 1200) == 600
    assert low_rendition_target([], 1200) == 600
    assert low_rendition_target([10], 1200) == AdaptPolicy().min_bitrate_kbps
    assert LOW_LADDER[0].scale < 1.0


def test_rate_meter() -> None:
    m = RateMeter(window_s=2.0)
    assert m.kbps() == 0.0
    for i in range(5):
        m.add(i * 12500, float(i))  # 12.5 kB/s = 100 kbit/s
    assert m.kbps() == pytest.approx(100.0)


def _frame(i: int, w: int = 640, h: int = 360) -> av.VideoFrame:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 255, (h * 3 // 2, w), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
    frame.pts = i * 6000  # 15 fps in 1/90000
    return frame


def test_encoder_changes_size_fps_and_bitrate_at_run_time() -> None:
    enc = H264Encoder(640, 360, 15, 1500, 2.0, 0.5)
    assert len(enc.encode(_frame(0))) == 1
    enc.set_output(320, 180, 7.5)
    enc.bitrate_kbps = 200
    out = [p for i in range(1, 13) for p in enc.encode(_frame(i))]
    # Half the frames dropped; the first encoded one after the change is an IDR.
    assert len(out) == 6 and out[0].is_keyframe
    assert enc.frames_dropped == 6 and enc.reopens == 1
    stats = enc.stats()
    assert (stats["out_width"], stats["out_height"], stats["out_fps"]) == (320, 180, 7.5)
    assert stats["bitrate_kbps"] == 200
    dec = av.CodecContext.create("h264", "r")
    sizes = {(f.width, f.height) for p in out for f in dec.decode(p)}
    assert sizes == {(320, 180)}
    with pytest.raises(ValueError):
        enc.set_output(1280, 720, 15)
    with pytest.raises(ValueError):
        enc.set_output(320, 180, 30)
    with pytest.raises(ValueError):
        enc.set_output(321, 180, 15)


def test_overuse_without_loss_or_queueing_does_not_cut_a_sender() -> None:
    # Measured on a clean link of a busy machine: aiortc's receiver reported overuse 1-2 s
    # after joining (REMB 1080-1300 for agents sending ~1500), with no loss; cutting to it
    # cost two IDRs and 8 s of a poorer picture.
    c = RateController(1500)
    c.on_feedback(LinkFeedback(rtt_ms=2.0, fraction_lost=0.0), 0.5, sent_kbps=1450)
    c.on_feedback(LinkFeedback(remb_kbps=1087, fraction_lost=0.0, rtt_ms=6.0), 1.0,
                  sent_kbps=1450)
    assert not c.remb_binding and c.target_kbps(1.0) == 1500
    # A queue building up on the path (the round trip 80 ms above its floor): REMB binds.
    c.on_feedback(LinkFeedback(remb_kbps=1100, rtt_ms=82.0), 2.0, sent_kbps=1450)
    assert c.remb_binding and c.target_kbps(2.0) == 1100
    c.on_feedback(LinkFeedback(remb_kbps=1400), 3.0, sent_kbps=1100)
    assert c.target_kbps(3.0) == 1400


def test_overuse_with_loss_cuts_at_once() -> None:
    # A 512 kbit/s bottleneck under a 1500 kbit/s sender (benchmarks/uplink.py): REMB 264
    # with 29 % loss in the same report.
    c = RateController(1500)
    c.on_feedback(LinkFeedback(remb_kbps=264, fraction_lost=0.29), 1.0, sent_kbps=1400)
    assert c.remb_binding and c.target_kbps(1.0) == 264
    # Callers that do not know what they send take every REMB as a limit.
    c2 = RateController(1500)
    c2.on_feedback(LinkFeedback(remb_kbps=1259), 1.0)
    assert c2.target_kbps(1.0) == 1259


def test_sender_side_estimate_sets_the_target_while_fresh() -> None:
    """A sender-side estimate (transport-wide feedback) is the target as it comes, without
    REMB's evidence rules; when it stops coming the REMB/loss rules take over again."""
    c = RateController(1500)
    c.on_feedback(LinkFeedback(remb_kbps=1400.0), 0.0, 1500.0)
    c.on_feedback(LinkFeedback(estimate_kbps=330.0), 0.1)
    assert c.target_kbps(0.2) == 330.0
    c.on_feedback(LinkFeedback(estimate_kbps=20.0), 0.3)
    assert c.target_kbps(0.3) == c.policy.min_bitrate_kbps
    assert c.estimate_falling
    assert c.target_kbps(0.3 + c.policy.estimate_max_age_s + 0.1) == 1500.0
    with pytest.raises(ValueError, match="estimate"):
        c.on_feedback(LinkFeedback(estimate_kbps=-1.0), 1.0)


def test_a_fast_starting_estimate_does_not_move_a_subscriber_down() -> None:
    """At joining the sender-side estimate starts at 300 kbit/s on every link; only once it
    saw congestion does a low one move the subscriber to the low rendition."""
    policy = AdaptPolicy(down_hold_s=0.5)
    c, s = RateController(1200, policy), RenditionSelector(policy)
    for i in range(20):
        c.on_feedback(LinkFeedback(estimate_kbps=300.0 + 20 * i, estimate_probing=True),
                      i * 0.1)
        assert s.choose(c, 1200.0, i * 0.1) == "high"
    t = 2.0
    c.on_feedback(LinkFeedback(estimate_kbps=320.0, estimate_probing=False), t)
    assert s.choose(c, 1200.0, t) == "high"
    assert s.choose(c, 1200.0, t + 0.6) == "low"


def test_a_fast_starting_estimate_moves_a_subscriber_up_only_with_room() -> None:
    """On the low rendition, a fast start that has not reached the high rendition's rate
    keeps the subscriber low (measured before the fix: an estimate of 487-558 kbit/s on a
    512 kbit/s link moved it to a 1160 kbit/s high rendition, and the link's queue dropped
    ~300 packets: 3 s without picture)."""
    policy = AdaptPolicy(up_hold_s=0.5)
    c, s = RateController(1200, policy), RenditionSelector(policy, rendition="low")
    t = 0.0
    for i in range(60):
        t = i * 0.1
        c.on_feedback(LinkFeedback(estimate_kbps=min(300.0 + 20 * i, 558.0),
                                   estimate_probing=True), t)
        assert s.choose(c, 1160.0, t) == "low", f"moved up at {t:.1f} s"
    # 0.75 of what the high one sends is not room for it (measured before the fix: a
    # 1 Mbit/s link sent 1.2 Mbit/s, ~200 packets dropped, a 3 s freeze).
    for _ in range(20):
        c.on_feedback(LinkFeedback(estimate_kbps=1000.0, estimate_probing=False), t)
        assert s.choose(c, 1160.0, t) == "low", f"moved up at {t:.1f} s"
        t += 0.1
    # Room for the high rendition (>= up_room_ratio of what it sends), held up_hold_s: up.
    c.on_feedback(LinkFeedback(estimate_kbps=1280.0, estimate_probing=True), t)
    assert s.choose(c, 1160.0, t) == "low"
    c.on_feedback(LinkFeedback(estimate_kbps=1290.0, estimate_probing=True), t + 0.6)
    assert s.choose(c, 1160.0, t + 0.6) == "high"


def test_a_sender_side_estimate_replaces_the_blind_probe() -> None:
    """With a fresh sender-side estimate that has no room for the high rendition, the
    periodic probe never sends the high one into the link; REMB alone still probes."""
    policy = AdaptPolicy(probe_interval_s=5.0)
    c, s = RateController(1200, policy), RenditionSelector(policy, rendition="low")
    for i in range(200):
        t = i * 0.1
        c.on_feedback(LinkFeedback(estimate_kbps=400.0), t)
        assert s.choose(c, 1160.0, t) == "low", f"probed at {t:.1f} s"
    r, sr = RateController(1200, policy), RenditionSelector(policy, rendition="low")
    chosen = []
    for i in range(80):
        t = i * 0.1
        r.on_feedback(LinkFeedback(remb_kbps=400.0), t)
        chosen.append(sr.choose(r, 1160.0, t))
    assert "high" in chosen  # the periodic probe (probe_interval_s) of REMB
