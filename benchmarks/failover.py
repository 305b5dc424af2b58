"""Fail-over of several mixer nodes (issue 20): kill -9 the node of a live lesson and time
until every classroom is back in the same lesson, decoding frames, on a survivor.

Each trial is a fresh county on loopback: a real Redis (scripts/redisserver.sh), two
``syncclass mixer --node-id`` nodes (heartbeat 0.5 s, lease 2 s), the main classroom's
and a receiving classroom's agents (synthetic 320x180 cameras). Nodes run as processes on
this machine's loopback, not in network namespaces (the kill -9 path is the same: the
socket closes and the lease expires).

    .venv/bin/python -m benchmarks.failover --trials 10 --out benchmarks/results/failover.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from syncclass.stats import percentile
from syncclass.testing.cluster_support import ClusterDeployment
from tests.county import County

from .harness import write_result

MAIN, RURAL = "main-3-1", "hetou-3"


def trial(work: Path) -> dict[str, Any]:
    county = County(work)
    county.mixer["ice_host_addresses"] = ["127.0.0.1"]
    county.data["media"].update(width=640, height=360, bitrate_kbps=800, uplink_bitrate_kbps=500)
    county.synthetic_cameras(width=320, height=180, fps=15)
    county.data["analytics"] = {"enabled": False}
    county.data["recorder"] = {"enabled": False}
    c = ClusterDeployment(county.data, work)
    try:
        c.start_node("n1")
        c.start_node("n2")
        for cid in (MAIN, RURAL):
            c.start_agent(cid, "n1")
        c.dep.wait_for(lambda: all(c.dep.agent_status(x)["state"] == "connected"
                                   for x in (MAIN, RURAL)), 30, "agents connected")
        status, lesson = c.dep.agent_command(MAIN, "start")
        if status != 200:
            raise RuntimeError(f"start: {status} {lesson}")
        lid = lesson["lesson_id"]
        owner = c.node_of_agent(MAIN) or "n1"
        survivor = "n2" if owner == "n1" else "n1"
        c.wait_for(lambda: all(c.in_lesson_with_frames(x, lid, owner, 15)
                               for x in (MAIN, RURAL)), 30, "lesson running")
        time.sleep(2.0)
        c.kill_node(owner)
        back_s = c.wait_for(lambda: all(c.in_lesson_with_frames(x, lid, survivor, 5)
                                        for x in (MAIN, RURAL)), 30, "back on the survivor")
        lessons = c.node_status(survivor)["lessons"]
        same = [(x["lesson_id"], x["started_ms"]) for x in lessons
                if x["state"] == "live"] == [(lid, lesson["started_ms"])]
        return {"back_s": round(back_s, 3), "same_lesson": same}
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/failover.json")
    args = ap.parse_args()
    trials = []
    for i in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="syncclass-failover-") as tmp:
            t = trial(Path(tmp))
        t["load_1min"] = round(os.getloadavg()[0], 2)
        trials.append(t)
        print(f"trial {i + 1}: {t}", flush=True)
    back = [t["back_s"] for t in trials]
    result = {"benchmark": "failover", "nodes": 2, "classrooms": 2, "heartbeat_s": 0.5,
              "lease_ttl_s": 2.0, "trials": trials,
              "back_s": {"p50": round(percentile(back, 50), 3),
                         "p95": round(percentile(back, 95), 3), "max": max(back)},
              "all_same_lesson": all(t["same_lesson"] for t in trials)}
    write_result(args.out, result)
    print(result["back_s"], "same lesson:", result["all_same_lesson"])


if __name__ == "__main__":
    main()
