"""Benchmark: a browser classroom behind a thin link, Chromium's own estimator as the
reference beside our edge agents (``estimator: gcc`` and ``remb``), in one run.

    sudo nice -n 5 .venv/bin/python -m benchmarks.browser_uplink --cap 512 --losses 0 \
        --modes chromium,gcc,remb --seconds 36

For each mode in turn the receiving classroom hetou-3 sits in a network namespace behind the
same :class:`syncclass.netem.EmulatedLink` as in :mod:`benchmarks.uplink` (both directions
capped at ``--cap`` kbit/s, 20 ms one way, ``--losses`` % random loss):

- ``chromium`` / ``chromium-remb``: hetou-3 joins from ``/join`` in Debian's headless
  Chromium, which runs inside the namespace (fake camera: a 640x360, 15 fps clip, as the
  agents' synthetic camera; fake microphone: its tone). The mixer runs with
  ``estimator: gcc`` (``chromium``), so it answers Chromium's offer of the transport-wide
  sequence number extension and ``transport-cc`` feedback and Chromium estimates its uplink
  with its own send-side estimator (libwebrtc's GCC); with ``chromium-remb`` the mixer
  runs with ``remb`` and Chromium has only aiortc's REMB and loss to go on.
- ``gcc`` / ``remb``: hetou-3 is an edge agent, exactly :func:`benchmarks.uplink.run_capped_lesson`.

The same figures come out for every mode (:func:`benchmarks.uplink.figures`): fps the mixer
decodes of hetou-3's camera and fps hetou-3 decodes of its view, their longest stalls,
seconds from join to >= 10 fps both ways, RTCP round trips up (camera stream) and down (view
stream), freezes (gaps > 0.5 s between shown frames, as the agents count them). For
Chromium they come from its ``getStats()`` (outbound-rtp bytes/fps/target, remote-inbound-rtp
round trip, inbound-rtp frames decoded, candidate-pair ``currentRoundTripTime`` and
``availableOutgoingBitrate``), from ``requestVideoFrameCallback`` on the page's view (freezes)
and from the mixer's own stats; the negotiated answer (header extensions, RTCP feedback) is
recorded too. Writes benchmarks/results/congestion_browser.json. Needs root.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from syncclass.demo import LocalDeployment
from syncclass.netem import EmulatedLink, Impairment
from syncclass.testing.browser import (
    CHROMIUM,
    chromium,
    wait_page,
    write_timecode_y4m,
    write_tone_wav,
)

from .harness import ROOT, write_result
from .uplink import (
    MAIN,
    RURAL,
    SAMPLE_S,
    Sample,
    _percentile,
    figures,
    run_capped_lesson,
    timeline,
    write_configs,
)

MODES = {"chromium": ("browser", "gcc"), "chromium-remb": ("browser", "remb"),
         "gcc": ("agent", "gcc"), "remb": ("agent", "remb")}
"""Mode name -> (who hetou-3 is, the estimator in the mixer's and agents' config)."""
FREEZE_GAP_MS = 500
"""A gap between shown frames longer than this is a freeze (edge_agent's FREEZE_GAP_S)."""
CLIP_FRAMES = 150
"""The fake camera's clip: 10 s at 15 fps, looped by Chromium (52 MB at 640x360)."""

STATS_JS = """async () => {
  // Chromium's own view of its link (w3c webrtc-stats), sampled by the benchmark.
  const pc = window.syncclass.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  const out = {};
  for (const s of stats.values()) {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.bytes_sent = s.bytesSent; out.frames_sent = s.framesSent;
      out.frames_encoded = s.framesEncoded; out.fps_sent = s.framesPerSecond ?? null;
      out.target_bps = s.targetBitrate ?? null; out.width = s.frameWidth ?? null;
      out.height = s.frameHeight ?? null; out.limited_by = s.qualityLimitationReason ?? null;
      out.encoder = s.encoderImplementation ?? null; out.codec_id = s.codecId;
    } else if (s.type === 'remote-inbound-rtp' && s.kind === 'video') {
      out.rtt_s = s.roundTripTime ?? null; out.remote_lost = s.packetsLost ?? null;
    } else if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.frames_decoded = s.framesDecoded ?? 0; out.fps_rx = s.framesPerSecond ?? null;
      out.freeze_count = s.freezeCount ?? null;
      out.freezes_s = s.totalFreezesDuration ?? null;
      out.bytes_received = s.bytesReceived;
    } else if (s.type === 'transport' && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      if (pair) {
        out.pair_rtt_s = pair.currentRoundTripTime ?? null;
        out.available_out_bps = pair.availableOutgoingBitrate ?? null;
        out.available_in_bps = pair.availableIncomingBitrate ?? null;
      }
    }
  }
  if (out.codec_id) { const c = stats.get(out.codec_id); out.codec = c ? c.mimeType : null; }
  delete out.codec_id;
  return out;
}"""

FREEZES_JS = f"""() => {{
  // Gaps between frames the page shows, counted like edge_agent's reception (> 0.5 s).
  const v = document.getElementById('view');
  const f = window.__freezes = {{freezes: 0, frozen_ms: 0, max_gap_ms: 0, last: null, shown: 0}};
  const cb = (now) => {{
    if (f.last !== null) {{
      const gap = now - f.last;
      f.max_gap_ms = Math.max(f.max_gap_ms, gap);
      if (gap > {FREEZE_GAP_MS}) {{ f.freezes += 1; f.frozen_ms += gap; }}
    }}
    f.last = now; f.shown += 1;
    v.requestVideoFrameCallback(cb);
  }};
  v.requestVideoFrameCallback(cb);
}}"""


def negotiated(sdp: str) -> dict[str, Any]:
    """What an SDP answer agreed to, per media section: header extension URIs and the RTCP
    feedback types of its codecs."""
    out = []
    for section in sdp.split("\r\nm=")[1:]:
        kind = section.split(" ", 1)[0]
        exts = sorted(set(re.findall(r"a=extmap:\d+(?:/\w+)? (\S+)", section)))
        fbs = sorted(set(re.findall(r"a=rtcp-fb:\d+ ([\w-]+(?: [\w-]+)?)", section)))
        out.append({"kind": kind, "extensions": exts, "rtcp_feedback": fbs})
    return {"sections": out}


def run_browser_lesson(tmp: Path, cap_kbps: float, estimator: str, loss_percent: float,
                       lesson_s: float, settle_s: float) -> dict[str, Any]:
    """One lesson with hetou-3 in Chromium behind a ``cap_kbps`` link; its figures (as
    :func:`benchmarks.uplink.figures`, plus Chromium's own)."""
    with EmulatedLink("bupl", seed=3) as link:
        main_cfg, _ = write_configs(tmp, link, True, estimator)
        dep = LocalDeployment(main_cfg, tmp)
        video = write_timecode_y4m(tmp / "camera.y4m", dep.config.classroom_number(RURAL),
                                   width=640, height=360, fps=15, frames=CLIP_FRAMES)
        audio = write_tone_wav(tmp / "mic.wav", dep.config.classroom(RURAL).tone_hz)
        # Chromium itself runs in the namespace; Playwright drives it over its pipe.
        wrapper = tmp / "chromium-behind-link"
        wrapper.write_text(f'#!/bin/sh\nexec {" ".join(link.ns_command([str(CHROMIUM)]))} "$@"\n')
        wrapper.chmod(0o755)
        token = dep.config.classroom(RURAL).token
        samples: list[Sample] = []
        chrome: list[dict[str, Any]] = []
        try:
            dep.start_mixer()
            dep.start_agent(MAIN, out_dir=tmp / "classrooms")
            origin = f"http://{link.host_addr}:{dep.port}"
            # getUserMedia needs a secure origin; the mixer is plain HTTP at the link address.
            with chromium(video, audio, executable=wrapper, extra_args=[
                    f"--unsafely-treat-insecure-origin-as-secure={origin}"]) as browser:
                page = browser.new_page()
                page.goto(f"{origin}/join#classroom={RURAL}&token={token}")
                wait_page(page, "() => window.syncclass.me !== null", 30, "welcome")
                page.evaluate(FREEZES_JS)

                def peer(cid: str) -> str | None:
                    room = dep.mixer_status()["classrooms"].get(cid)
                    return None if room is None else room["peer"]

                dep.wait_for(lambda: {MAIN, RURAL} <= set(dep.mixer_status()["classrooms"]),
                             30, "classrooms connected")
                link.impair(both=Impairment(delay_ms=20, rate_kbps=cap_kbps,
                                            loss_percent=loss_percent))
                status, lesson = dep.agent_command(MAIN, "start")
                assert status == 200, lesson
                dep.wait_for(lambda: peer(RURAL) == "connected", 30, "the browser joined")
                t0 = time.monotonic()
                while (t := time.monotonic() - t0) < lesson_s:
                    st = page.evaluate(STATS_JS) or {}
                    media = dep.mixer_stats()["media"][lesson["lesson_id"]]
                    view = media["views"]["students_view"]["renditions"] or {}
                    samples.append(Sample(
                        t, int(st.get("bytes_sent") or 0),
                        round((st.get("target_bps") or 0) / 1000, 1),
                        int(media["video_inputs"].get(RURAL, {}).get("frames", 0)),
                        int(st.get("frames_decoded") or 0),
                        view, link.stats(),
                        {"estimate_kbps": None if st.get("available_out_bps") is None
                         else round(st["available_out_bps"] / 1000, 1)},
                        None if st.get("rtt_s") is None else round(st["rtt_s"] * 1000, 1),
                        ((view.get("subscribers") or {}).get(RURAL) or {}).get("rtt_ms"),
                        cap_kbps,
                    ))
                    chrome.append({"t": round(t, 1), **st})
                    time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - t0 - t)))
                shown = page.evaluate("() => window.__freezes")
                answer = page.evaluate("() => window.syncclass.pc.remoteDescription.sdp")
                offer = page.evaluate("() => window.syncclass.pc.localDescription.sdp")
                status, body = dep.agent_command(MAIN, "end")
                assert status == 200, body
        except BaseException:
            dep.write_logs(40)
            raise
        finally:
            dep.stop_all()
    rx = {"freezes": shown["freezes"], "frozen_s": round(shown["frozen_ms"] / 1000, 2),
          "max_video_gap_ms": round(shown["max_gap_ms"])}
    result = figures(samples, rx, cap_kbps, True, settle_s)
    window = [c for c in chrome if c["t"] >= settle_s]
    pair_rtt = [c["pair_rtt_s"] * 1000 for c in window if c.get("pair_rtt_s") is not None]
    avail = [c["available_out_bps"] / 1000 for c in window
             if c.get("available_out_bps") is not None]
    last = chrome[-1] if chrome else {}
    result["chromium"] = {
        "pair_rtt_ms_p50": _percentile(pair_rtt, 0.5),
        "pair_rtt_ms_p90": _percentile(pair_rtt, 0.9),
        "available_outgoing_kbps_p50": _percentile(avail, 0.5),
        "available_outgoing_kbps_min": _percentile(avail, 0.0),
        "fps_sent_p50": _percentile([c["fps_sent"] for c in window
                                     if c.get("fps_sent") is not None], 0.5),
        "frames_shown": shown["shown"],
        "freeze_count": last.get("freeze_count"), "freezes_s": last.get("freezes_s"),
        "last": {k: last.get(k) for k in ("width", "height", "limited_by", "codec", "encoder",
                                          "target_bps", "available_out_bps")},
        "answer": negotiated(answer),
        "offer_offered_transport_cc": "transport-cc" in offer,
    }
    result["estimator"] = estimator
    result["loss_percent"] = loss_percent
    result["timeline"] = timeline(samples)
    result["chromium_timeline"] = chrome
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description="A browser classroom (Chromium's own estimator) "
                                 "beside edge agents (gcc, remb) behind the same thin link.")
    ap.add_argument("--cap", type=float, default=512.0, help="link cap, kbit/s")
    ap.add_argument("--losses", default="0",
                    help="random loss on the link, %% of packets, comma-separated")
    ap.add_argument("--modes", default="chromium,gcc,remb",
                    help="chromium (mixer on gcc: Chromium's send-side estimator), "
                         "chromium-remb (mixer on remb), gcc, remb (edge agents)")
    ap.add_argument("--seconds", type=float, default=36.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/syncclass-bench-browser-uplink"))
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "congestion_browser.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the link emulator needs root (network namespaces, /dev/net/tun)")
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (scripts/bootstrap.sh)")
    runs = []
    load_start = os.getloadavg()
    for round_, loss, mode in itertools.product(range(args.rounds),
                                                [float(x) for x in args.losses.split(",")],
                                                args.modes.split(",")):
        who, estimator = MODES[mode]
        work = args.work / f"{int(args.cap)}-{mode}-{loss:g}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        load = os.getloadavg()
        try:
            if who == "browser":
                result = run_browser_lesson(work, args.cap, estimator, loss, args.seconds,
                                            args.settle)
            else:
                result = run_capped_lesson(work, args.cap, True, args.seconds, args.settle,
                                           estimator, loss)
        except Exception as exc:  # one failed run is a figure too
            result = {"cap_kbps": args.cap, "estimator": estimator, "loss_percent": loss,
                      "error": repr(exc)}
        result = {"mode": mode, "classroom": who, "round": round_,
                  "loadavg_before": [round(x, 2) for x in load],
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()], **result}
        print(json.dumps({k: v for k, v in result.items()
                          if k not in ("timeline", "chromium_timeline")}), flush=True)
        runs.append(result)
    write_result(args.out, {"benchmark": "browser_uplink",
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "cpus": os.cpu_count(), "loadavg_start": load_start,
                            "loadavg_end": os.getloadavg(), "runs": runs})


if __name__ == "__main__":
    main()
