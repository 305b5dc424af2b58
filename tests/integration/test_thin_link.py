"""A receiving classroom behind a 384 kbit/s link (20 ms each way, both directions capped):
with the sender-side estimator (``media.adaptation.estimator: gcc``) video keeps moving
both ways from the first seconds. Before it (REMB-based), the first 5-12 s froze and a
test like this one failed 1 run in 5.

The lesson is ``benchmarks/uplink.py``'s (camera 640x360 at up to 1500 kbit/s, view up
to 1200 kbit/s: both well above the link). Needs root (network namespaces, /dev/net/tun).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.uplink import run_capped_lesson

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_384_kbps_link_keeps_video_moving_both_ways(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the link emulator needs root (network namespaces, /dev/net/tun)")
    result = run_capped_lesson(tmp_path, 384.0, True, lesson_s=18.0, settle_s=6.0,
                               estimator="gcc")
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "thin_link.json").write_text(json.dumps(result, indent=1),
                                                        encoding="utf-8")
    shown = {k: v for k, v in result.items() if k != "timeline"}
    # The sender-side estimate ran: transport-wide feedback reached the agent's sender.
    cc = result["uplink_transport_cc"]
    assert cc and cc["feedback_received"] > 50, shown
    # Over seconds 6-18 both directions carry live video: the mixer decodes the rural
    # camera and the rural classroom its view at >= 10 fps, without a stall of 2 s.
    assert result["mixer_fps_in"] >= 10 and result["rural_fps_rx"] >= 10, shown
    assert result["mixer_max_stall_s"] < 2 and result["rural_max_stall_s"] < 2, shown
    # ...from the first seconds: not the 5-12 s freeze of a classroom joining at full rate.
    assert result["join_to_10fps_s"] is not None and result["join_to_10fps_s"] <= 6, shown
    # What the agent sends fits the link.
    assert result["uplink_kbps"] < 0.9 * 384, shown
