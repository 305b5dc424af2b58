"""Where a classroom's view starts with a sender-side estimate (mixer.renditions)."""

from __future__ import annotations

import time

from mixer.renditions import ViewRenditions
from syncclass.adapt import AdaptPolicy, LinkFeedback
from syncclass.codec import H264Encoder
from syncclass.config import MediaConfig


def _view(start_kbps: float | None) -> ViewRenditions:
    media = MediaConfig(width=320, height=180, bitrate_kbps=1200)
    high = H264Encoder(320, 180, 15, 1200, 2.0, 0.5)
    return ViewRenditions("students_view", media, high, AdaptPolicy(up_hold_s=0.0),
                          start_kbps=start_kbps)


def test_with_a_sender_side_estimate_a_subscriber_starts_low_and_moves_up() -> None:
    view = _view(300.0)
    view.add("hetou-3")
    sub = view.subscribers["hetou-3"]
    assert sub.route == "low" and view.low is not None
    assert view.encoder_for("hetou-3") is view.low
    assert sub.control.target_kbps(time.monotonic()) == 300.0
    # Its estimate's fast start shows room for the high rendition: it moves up (a probe)
    # without waiting for the periodic one.
    sub.control.on_feedback(LinkFeedback(estimate_kbps=1000.0, estimate_probing=True),
                            time.monotonic())
    sub.feedback += 1
    view.tick(time.monotonic())
    view.tick(time.monotonic())
    assert sub.pending == "high"
    view.low.close()


def test_without_one_it_starts_high() -> None:
    view = _view(None)
    view.add("hetou-3")
    assert view.subscribers["hetou-3"].route == "high" and view.low is None
