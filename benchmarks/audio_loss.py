"""Audio mouth-to-ear through the mixer, on a clean link and under packet loss.

The main classroom runs here; a receiving classroom's agent runs in its own network
namespace behind the project's user-space link emulator (``syncclass.netem``), impaired
both ways. Every synthetic microphone beeps at the same epoch-aligned instants (every
5 s); the receiving agent detects each beep in the N-1 mix it decodes and records
``heard - beep instant``: mouth-to-ear up to the agent's decoder (its speaker buffer is
not included). Phases (one lesson each, ``--seconds`` long) alternate between loss rates
so machine noise hits them alike; per loss rate the beeps of all rounds are pooled
(p50/p95), and the video glass-to-glass p50 of the teacher is reported beside them.

Needs root (network namespaces, /dev/net/tun).

    sudo .venv/bin/python -m benchmarks.audio_loss --loss 0,2 --seconds 90 --rounds 2 \\
        --out benchmarks/results/audio_loss.json
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

import yaml

from syncclass.demo import LocalDeployment, write_link_configs
from syncclass.netem import EmulatedLink, Impairment
from syncclass.stats import percentile

from .harness import ROOT, environment, write_result

MAIN, RURAL = "main-3-1", "hetou-3"


def write_configs(tmp: Path, link: EmulatedLink) -> tuple[Path, Path]:
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["analytics"] = {"enabled": False}
    return write_link_configs(data, link, tmp)


def one_phase(dep: LocalDeployment, link: EmulatedLink, out: Path, loss: float,
              seconds: float) -> dict[str, Any]:
    link.impair(both=Impairment(loss_percent=loss))
    before = link.stats()
    summary = out / f"{RURAL}.json"
    summary.unlink(missing_ok=True)
    try:
        status, lesson = dep.agent_command(MAIN, "start")
        assert status == 200, lesson
        dep.wait_for(lambda: all(dep.mixer_status()["classrooms"].get(c, {}).get("peer")
                                 == "connected" for c in (MAIN, RURAL)), 30, "joined")
        time.sleep(seconds)
        status, body = dep.agent_command(MAIN, "end")
        assert status == 200, body
        dep.wait_for(summary.exists, 20, "the receiving classroom's summary")
    finally:
        link.impair(both=Impairment())
    after = link.stats()
    rx = json.loads(summary.read_text())
    sent = sum(after[d]["packets"] - before[d]["packets"] for d in ("uplink", "downlink"))
    lost = sum(after[d]["lost"] - before[d]["lost"] for d in ("uplink", "downlink"))
    return {"loss_percent": loss, "link_loss_measured_percent":
            round(100 * lost / sent, 2) if sent else None,
            "audio_latency_ms": rx["audio_latency_ms"], "audio_gaps": rx["audio_gaps"],
            "max_audio_gap_ms": rx["max_audio_gap_ms"],
            "teacher_video_p50_ms": rx["latency_ms"].get(MAIN, {}).get("p50_ms"),
            "fps": rx["fps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loss", default="0,2", help="loss percentages, each way")
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audio_loss.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("audio_loss.py needs root (network namespaces, /dev/net/tun)")
    losses = [float(x) for x in args.loss.split(",")]
    env0 = environment()
    phases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="syncclass-audio-loss-") as tmp_s:
        tmp = Path(tmp_s)
        out = tmp / "classrooms"
        with EmulatedLink("alo", seed=11) as link:
            main_cfg, ns_cfg = write_configs(tmp, link)
            with LocalDeployment(main_cfg, tmp, log_level="warning") as dep:
                dep.start_mixer()
                dep.start_agent(MAIN, out_dir=out)
                dep.start_agent_behind(link, RURAL, ns_cfg, out)
                dep.wait_for(lambda: {MAIN, RURAL} <= set(dep.mixer_status()["classrooms"]),
                             60, "agents connected")
                for r in range(args.rounds):
                    for loss in losses:
                        phase = one_phase(dep, link, out, loss, args.seconds)
                        phase["round"] = r
                        print(json.dumps(phase), flush=True)
                        phases.append(phase)
    result: dict[str, Any] = {"seconds": args.seconds, "rounds": args.rounds,
                              "environment": {"start": env0, "end": environment()},
                              "phases": phases, "by_loss": {}}
    for loss in losses:
        rows = [p for p in phases if p["loss_percent"] == loss]
        samples = [v for p in rows for v in p["audio_latency_ms"].get("samples", [])]
        result["by_loss"][str(loss)] = {
            "beeps": sum(p["audio_latency_ms"].get("count", 0) for p in rows),
            "p50_ms_of_phases": [p["audio_latency_ms"].get("p50_ms") for p in rows],
            "p95_ms_of_phases": [p["audio_latency_ms"].get("p95_ms") for p in rows],
            "pooled_p50_ms": round(percentile(samples, 50), 1) if samples else None,
            "pooled_p95_ms": round(percentile(samples, 95), 1) if samples else None,
            "link_loss_measured_percent": [p["link_loss_measured_percent"] for p in rows],
            "audio_gaps": [p["audio_gaps"] for p in rows],
            "teacher_video_p50_ms": [p["teacher_video_p50_ms"] for p in rows],
        }
    write_result(Path(args.out), result)
    print(json.dumps(result["by_loss"], indent=1))


if __name__ == "__main__":
    main()
