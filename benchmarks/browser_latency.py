"""Glass-to-glass latency of the teacher's picture: agent → mixer → a Chromium page, side by
side with agent → mixer → agent, in one lesson on this machine.

A mixer, the main classroom's agent and one receiving agent (shanping-3) run as real
processes; hetou-3 joins from ``/join`` in Debian's headless Chromium (fake camera/mic).
Both receivers read the teacher's timecode (painted at capture, wall clock) from the
``students_view`` they decode: the agent with syncclass.timecode, the page from a canvas
with mixer/static/timecode.js at ``requestVideoFrameCallback`` time. Latency = shown − captured
(same machine, same clock).

    .venv/bin/python benchmarks/browser_latency.py --seconds 30 \
        --out benchmarks/results/browser_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncclass.demo import LocalDeployment  # noqa: E402
from tests.browser.test_browser_classroom import (  # noqa: E402
    AGENT_RURAL,
    BROWSER,
    MAIN,
    make_config,
    wait_page,
)
from tests.browser_support import chromium, write_timecode_y4m, write_tone_wav  # noqa: E402

RECEIVE_PATH_JS = """async () => {
  // Where the page's time goes, from Chromium's own inbound-rtp video statistics
  // (w3c webrtc-stats): per decoded or emitted frame, averaged over the lesson, ms.
  const stats = await window.syncclass.pc.getStats();
  for (const s of stats.values()) {
    if (s.type !== "inbound-rtp" || s.kind !== "video" || !s.framesDecoded) continue;
    const per = (total, count) => count ? Math.round(total / count * 1e4) / 10 : null;
    return {
      frames_decoded: s.framesDecoded, frames_dropped: s.framesDropped,
      jitter_buffer_ms: per(s.jitterBufferDelay, s.jitterBufferEmittedCount),
      jitter_buffer_target_ms: per(s.jitterBufferTargetDelay, s.jitterBufferEmittedCount),
      jitter_buffer_minimum_ms: per(s.jitterBufferMinimumDelay, s.jitterBufferEmittedCount),
      decode_ms: per(s.totalDecodeTime, s.framesDecoded),
      assembly_ms: per(s.totalAssemblyTime, s.framesAssembledFromMultiplePackets),
      receive_to_decoded_ms: per(s.totalProcessingDelay, s.framesDecoded),
      interframe_ms: per(s.totalInterFrameDelay, s.framesDecoded),
      decoder: s.decoderImplementation, jitter_ms: s.jitter * 1000,
    };
  }
  return null;
}"""
"""JavaScript for the page: its video receive path's own figures."""


def _stats(samples: list[float]) -> dict[str, Any]:
    data = np.asarray(samples, dtype=np.float64)
    return {
        "samples": len(data),
        "p50_ms": round(float(np.percentile(data, 50)), 1),
        "p95_ms": round(float(np.percentile(data, 95)), 1),
        "max_ms": round(float(data.max()), 1),
    }


def run(seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="syncclass-bench-") as tmp_name:
        tmp = Path(tmp_name)
        config_path, _ = make_config(tmp)
        dep = LocalDeployment(config_path, tmp)
        video = write_timecode_y4m(tmp / "camera.y4m", dep.config.classroom_number(BROWSER),
                                   frames=int(15 * (seconds + 60)))
        audio = write_tone_wav(tmp / "mic.wav", dep.config.classroom(BROWSER).tone_hz)
        token = dep.config.classroom(BROWSER).token
        out = tmp / "classrooms"
        try:
            with chromium(video, audio) as browser:
                dep.start_mixer()
                for cid in (MAIN, AGENT_RURAL):
                    dep.start_agent(cid, out_dir=out)
                page = browser.new_page()
                page.goto(f"{dep.mixer_url}/join#classroom={BROWSER}&token={token}")
                wait_page(page, "() => window.syncclass.me !== null", 30, "welcome")
                dep.wait_for(lambda: {MAIN, AGENT_RURAL, BROWSER}
                             <= set(dep.mixer_status()["classrooms"]), 30, "connected")
                status, lesson = dep.agent_command(MAIN, "start")
                if status != 200:
                    raise RuntimeError(f"start failed: {lesson}")
                wait_page(page, f"""() => {{ const l = window.syncclass.state.latency['{MAIN}'];
                                     return l && l.advances >= 15; }}""", 60, "teacher frames")
                time.sleep(seconds)
                # Both receivers' figures cover the whole lesson so far (same window).
                page_samples = page.evaluate(f"() => window.syncclass.state.latency['{MAIN}'].all")
                page_summary = page.evaluate("() => window.syncclass.summary()")
                receive_path = page.evaluate(RECEIVE_PATH_JS)
                mixer_stats = dep.mixer_stats()
                dep.agent_command(MAIN, "end")
                dep.wait_for(lambda: (out / f"{AGENT_RURAL}.json").exists(), 20, "agent summary")
                agent = json.loads((out / f"{AGENT_RURAL}.json").read_text(encoding="utf-8"))
        finally:
            dep.stop_all()
    media = next(iter(mixer_stats["media"].values()))
    view = media["views"]["students_view"]
    return {
        "what": "glass-to-glass latency of main-3-1's camera timecode in students_view, ms",
        "seconds": seconds,
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "chromium_page": {**_stats(page_samples), "fps": round(page_summary["fps"], 1)},
        "chromium_receive_path": receive_path,
        "agent": {
            "p50_ms": agent["latency_ms"][MAIN].get("p50_ms"),
            "p95_ms": agent["latency_ms"][MAIN].get("p95_ms"),
            "frames_read": agent["latency_ms"][MAIN]["frames_read"],
            "fps": agent.get("fps"),
        },
        "mixer": {"frames_composed": view["frames_composed"],
                  "frames_skipped": view["frames_skipped"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                        / "browser_latency.json")
    args = parser.parse_args()
    result = run(args.seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
