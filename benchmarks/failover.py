"""Fail-over of several mixer nodes (issue 20): kill -9 the node of a live lesson and time
until every classroom is back in the same lesson, decoding frames, on a survivor.

Each trial is a fresh county: a real Redis (scripts/redisserver.sh), ``syncclass mixer
--node-id`` nodes (heartbeat 0.5 s, lease 2 s), the main classroom's and a receiving
classroom's agents (synthetic 320x180 cameras).

Loopback mode (default): two nodes as processes on this machine's loopback, analytics and
the recorder off::

    .venv/bin/python -m benchmarks.failover --trials 10 --out benchmarks/results/failover.json

``--netns`` mode (root): every process on its own host of a bridged LAN
(:class:`syncclass.netem.BridgedLan`, 10.20.X.0/24, one network namespace each): the nodes
(``--nodes``, default 3), Redis, PostgreSQL (scripts/pgserver.sh, the nodes' shared
``analytics.database_url``), the recorder (subscribed to every node) and each classroom's
agent, each binding and offering (ICE) only its LAN address. The receiving classroom enters
at another node than the main one (a redirect over the LAN). Per trial it also ends the
lesson on the survivor and checks that the recording stayed one lesson folder with one
``mixer_restart`` gap and that the lesson's report row landed in PostgreSQL::

    nice -n 5 .venv/bin/python -m benchmarks.failover --netns --nodes 3 --trials 10 \
        --out benchmarks/results/failover_netns.json

``--workers N``: every node runs its lessons in N media workers (``mixer.workers``). Each
trial then first kills (``kill -9``) the lesson's worker and times until every classroom
is back in the same lesson on the same node (its front restarts the worker, which resumes
the lesson from Redis: ``worker_back_s``), then kills the whole node (front and workers)
as above::

    nice -n 5 .venv/bin/python -m benchmarks.failover --nodes 2 --workers 2 --trials 5 \
        --out benchmarks/results/failover_workers.json

Namespaces, the bridge and every process are removed on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from mixer.store import ReportStore
from syncclass.demo import free_port, http_json
from syncclass.netem import BridgedLan, LanHost
from syncclass.stats import percentile
from syncclass.testing.cluster_support import ClusterDeployment
from syncclass.testing.pg_support import PostgresServer
from tests.county import County

from .harness import write_result

MAIN, RURAL = "main-3-1", "hetou-3"
MID_LESSON_S = 4.0
"""Lesson time on the first node after the recording started, before the kill, s."""
AFTER_S = 4.0
"""Lesson time on the survivor after every classroom is back, before it ends, s."""


def kill_lessons_worker(c: ClusterDeployment, owner: str, lid: str) -> dict[str, Any]:
    """``kill -9`` of the media worker running lesson ``lid`` on node ``owner``: seconds
    until both classrooms rejoined it there (a reconnect, then decoded frames)."""
    [worker] = [x["worker"] for x in c.node_status(owner)["lessons"] if x["lesson_id"] == lid]
    pid = next(w["pid"] for w in c.node_stats(owner)["node"]["workers"]
               if w["worker"] == worker)
    seen = {x: c.agent_status(x)["reconnects"] for x in (MAIN, RURAL)}
    os.kill(pid, signal.SIGKILL)
    back_s = c.wait_for(lambda: all(c.agent_status(x)["reconnects"] > seen[x]
                                    and c.in_lesson_with_frames(x, lid, owner, 5)
                                    for x in (MAIN, RURAL)), 30, "back on the restarted worker")
    live = [(x["lesson_id"], x["worker"]) for x in c.node_status(owner)["lessons"]
            if x["state"] == "live"]
    return {"worker_back_s": round(back_s, 3), "worker_same_lesson": live == [(lid, worker)]}


def wait_back_on_survivor(c: ClusterDeployment, owner: str, lid: str) -> tuple[str, float]:
    """After ``owner`` was killed: the survivor on which both classrooms decode lesson
    ``lid`` again, and the seconds until they did (TimeoutError after 30 s)."""
    survivors = [n for n in c.ports if n != owner]
    found: list[str] = []

    def back() -> bool:
        for s in survivors:
            if all(c.in_lesson_with_frames(x, lid, s, 5) for x in (MAIN, RURAL)):
                found.append(s)
                return True
        return False

    back_s = c.wait_for(back, 30, "back on a survivor")
    return found[0], back_s


def trial(work: Path, nodes: int = 2, workers: int = 0) -> dict[str, Any]:
    county = County(work)
    county.mixer["ice_host_addresses"] = ["127.0.0.1"]
    county.data["media"].update(width=640, height=360, bitrate_kbps=800, uplink_bitrate_kbps=500)
    county.synthetic_cameras(width=320, height=180, fps=15)
    county.data["analytics"] = {"enabled": False}
    county.data["recorder"] = {"enabled": False}
    c = ClusterDeployment(county.data, work, nodes=nodes, workers=workers)
    try:
        for n in c.ports:
            c.start_node(n)
        for cid in (MAIN, RURAL):
            c.start_agent(cid, "n1")
        c.dep.wait_for(lambda: all(c.dep.agent_status(x)["state"] == "connected"
                                   for x in (MAIN, RURAL)), 30, "agents connected")
        status, lesson = c.dep.agent_command(MAIN, "start")
        if status != 200:
            raise RuntimeError(f"start: {status} {lesson}")
        lid = lesson["lesson_id"]
        owner = c.node_of_agent(MAIN) or "n1"
        c.wait_for(lambda: all(c.in_lesson_with_frames(x, lid, owner, 15)
                               for x in (MAIN, RURAL)), 30, "lesson running")
        time.sleep(2.0)
        out: dict[str, Any] = kill_lessons_worker(c, owner, lid) if workers else {}
        if workers:
            time.sleep(2.0)
        c.kill_node(owner)
        survivor, back_s = wait_back_on_survivor(c, owner, lid)
        lessons = c.node_status(survivor)["lessons"]
        same = [(x["lesson_id"], x["started_ms"]) for x in lessons
                if x["state"] == "live"] == [(lid, lesson["started_ms"])]
        return {**out, "back_s": round(back_s, 3), "same_lesson": same}
    finally:
        c.close()


def netns_trial(work: Path, hosts: dict[str, LanHost], pg: PostgresServer,
                nodes: int, workers: int = 0) -> dict[str, Any]:
    """One kill -9 of the lesson's node with every process on its own LAN host."""
    county = County(work)
    county.data["media"].update(width=640, height=360, bitrate_kbps=800, uplink_bitrate_kbps=500)
    county.synthetic_cameras(width=320, height=180, fps=15)
    county.data["analytics"] = {"enabled": True, "database_url": pg.url}
    # The recorder bus crosses the LAN: CURVE keys, as on separate hosts (one file for all).
    mixer_public, mixer_secret = zmq.curve_keypair()
    rec_public, rec_secret = zmq.curve_keypair()
    county.data.setdefault("recorder", {})["curve"] = {
        "mixer_public_key": mixer_public.decode(), "mixer_secret_key": mixer_secret.decode(),
        "recorders": [{"name": "recorder-1", "public_key": rec_public.decode()}],
        "recorder_secret_key": rec_secret.decode()}
    c = ClusterDeployment(county.data, work, nodes=nodes, hosts=hosts, workers=workers)
    rec = work / "rec"
    try:
        for n in c.ports:
            c.start_node(n)
        c.start_recorder(rec)
        c.start_agent(MAIN, "n1")
        c.dep.wait_for(lambda: c.agent_status(MAIN)["state"] == "connected", 30,
                       "main connected")
        c.start_agent(RURAL, "n2")  # redirected to the main classroom's node
        c.dep.wait_for(lambda: c.agent_status(RURAL)["state"] == "connected", 30,
                       "rural connected")
        status, lesson = c.agent_command(MAIN, "start")
        if status != 200:
            raise RuntimeError(f"start: {status} {lesson}")
        lid = lesson["lesson_id"]
        owner = c.node_of_agent(MAIN) or "n1"
        c.wait_for(lambda: all(c.in_lesson_with_frames(x, lid, owner, 15)
                               for x in (MAIN, RURAL)), 30, "lesson running")
        c.dep.wait_for(lambda: (rec / "lessons" / lid).is_dir(), 20, "the recording started")
        time.sleep(MID_LESSON_S)
        worker_kill = kill_lessons_worker(c, owner, lid) if workers else {}
        if workers:
            time.sleep(MID_LESSON_S)
        c.kill_node(owner)
        survivor, back_s = wait_back_on_survivor(c, owner, lid)
        lessons = c.node_status(survivor)["lessons"]
        same = [(x["lesson_id"], x["started_ms"]) for x in lessons
                if x["state"] == "live"] == [(lid, lesson["started_ms"])]
        time.sleep(AFTER_S)
        status, ended = c.agent_command(MAIN, "end")
        if status != 200 or ended.get("lesson_id") != lid:
            raise RuntimeError(f"end: {status} {ended}")

        def ready() -> dict[str, Any] | None:
            body = http_json(c.url(survivor) + "/api/recorder", token=c.dep.ops_token,
                             timeout=2.0)[1]
            got: dict[str, Any] | None = body["ready"].get(lid)
            return got

        c.dep.wait_for(lambda: ready() is not None, 60, "the recording")
        recording = ready() or {}
        meta = json.loads(Path(recording["locations"]["metadata.json"]).read_text())
        gaps = meta.get("gaps", [])
        folders = sorted(p.name for p in (rec / "lessons").iterdir() if p.is_dir())
        before = after = 0.0
        if gaps:
            g = gaps[-1]  # the node's
            before = sum(x["duration_s"] for x in meta["segments"] if x["start_s"] < g["start_s"])
            after = sum(x["duration_s"] for x in meta["segments"]
                        if x["start_s"] >= g["start_s"] + g["duration_s"])
        store = ReportStore(pg.url)
        c.dep.wait_for(lambda: any(x["lesson_id"] == lid for x in store.lessons()), 60,
                       "the report in PostgreSQL")
        row = next(x for x in store.lessons() if x["lesson_id"] == lid)
        rooms = {r["classroom_id"]: r["present_s"] for r in store.classrooms([lid])}
        # With a worker killed first the recording has two gaps (each a mixer restart).
        want_gaps = ["mixer_restart"] * (2 if workers else 1)
        return {
            **worker_kill,
            "back_s": round(back_s, 3), "owner": owner, "survivor": survivor,
            "same_lesson": same,
            "recording": {"lesson_folders": folders, "same_folder": folders == [lid],
                          "gaps": [{"reason": g["reason"], "duration_s": g["duration_s"]}
                                   for g in gaps],
                          "before_gap_s": round(before, 2), "after_gap_s": round(after, 2)},
            "report": {"in_postgresql": True, "started_ms_after_lesson_start":
                       int(row["started_ms"]) - int(lesson["started_ms"]),
                       "duration_s": row["duration_s"], "present_s": rooms},
            "ok": (same and folders == [lid] and [g["reason"] for g in gaps] == want_gaps
                   and before > 0 and after > 0),
        }
    finally:
        c.close()


def run_netns(trials: int, nodes: int, workers: int = 0) -> dict[str, Any]:
    """``trials`` fail-overs on one bridged LAN with one PostgreSQL; removes both after."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)  # through the finally blocks, as Ctrl-C
    lan = BridgedLan("fo")
    pg: PostgresServer | None = None
    try:
        lan.start()
        names = ["redis", "pg", *(f"n{i + 1}" for i in range(nodes)), "recorder", MAIN, RURAL]
        hosts = {n: lan.add_host(n) for n in names}
        pg = PostgresServer(free_port(), hosts["pg"].ns_addr, hosts["pg"].ns_command([]))
        pg.start()
        results = []
        for i in range(trials):
            with tempfile.TemporaryDirectory(prefix="syncclass-failover-") as tmp:
                t = netns_trial(Path(tmp), {n: h for n, h in hosts.items() if n != "pg"}, pg,
                                nodes, workers)
            t["load_1min"] = round(os.getloadavg()[0], 2)
            results.append(t)
            print(f"trial {i + 1}: {json.dumps(t)}", flush=True)
        back = [t["back_s"] for t in results]
        return {"benchmark": "failover_netns", "nodes": nodes, "workers": workers,
                **_worker_figures(results), "classrooms": 2,
                "heartbeat_s": 0.5, "lease_ttl_s": 2.0,
                "network": f"bridge {lan.prefix}.0/24, one network namespace per node, Redis, "
                           "PostgreSQL, recorder and agent",
                "trials": results,
                "back_s": {"p50": round(percentile(back, 50), 3),
                           "p95": round(percentile(back, 95), 3), "max": max(back)},
                "all_same_lesson": all(t["same_lesson"] for t in results),
                "all_recordings_one_folder_one_gap": all(t["ok"] for t in results),
                "all_reports_in_postgresql": all(t["report"]["in_postgresql"]
                                                 for t in results)}
    finally:
        if pg is not None:
            pg.close()
        lan.close()


def _worker_figures(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The worker kills' figures over the trials (none without ``--workers``)."""
    back = [t["worker_back_s"] for t in trials if "worker_back_s" in t]
    if not back:
        return {}
    return {"worker_back_s": {"p50": round(percentile(back, 50), 3),
                              "p95": round(percentile(back, 95), 3), "max": max(back)},
            "all_worker_same_lesson": all(t["worker_same_lesson"] for t in trials)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--out", default=None, help="default benchmarks/results/failover.json, "
                    "with --netns failover_netns.json")
    ap.add_argument("--netns", action="store_true",
                    help="every process in its own network namespace on a bridge (root)")
    ap.add_argument("--nodes", type=int, default=None,
                    help="mixer nodes (default 2, with --netns 3)")
    ap.add_argument("--workers", type=int, default=0,
                    help="media workers per node (mixer.workers; default 0: one process)")
    args = ap.parse_args()
    nodes = args.nodes if args.nodes is not None else (3 if args.netns else 2)
    if nodes < 2:
        ap.error("--nodes: a fail-over needs at least 2 nodes")
    if not 0 <= args.workers <= 64:
        ap.error("--workers: 0-64")
    suffix = "_workers" if args.workers else ""
    if args.netns:
        result = run_netns(args.trials, nodes, args.workers)
        write_result(args.out or f"benchmarks/results/failover_netns{suffix}.json", result)
        print(result.get("worker_back_s"), result["back_s"], "same lesson:",
              result["all_same_lesson"], "one folder, its gaps:",
              result["all_recordings_one_folder_one_gap"])
        return
    trials = []
    for i in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="syncclass-failover-") as tmp:
            t = trial(Path(tmp), nodes, args.workers)
        t["load_1min"] = round(os.getloadavg()[0], 2)
        trials.append(t)
        print(f"trial {i + 1}: {t}", flush=True)
    back = [t["back_s"] for t in trials]
    result = {"benchmark": "failover", "nodes": nodes, "workers": args.workers,
              **_worker_figures(trials), "classrooms": 2, "heartbeat_s": 0.5,
              "lease_ttl_s": 2.0, "trials": trials,
              "back_s": {"p50": round(percentile(back, 50), 3),
                         "p95": round(percentile(back, 95), 3), "max": max(back)},
              "all_same_lesson": all(t["same_lesson"] for t in trials)}
    write_result(args.out or f"benchmarks/results/failover{suffix}.json", result)
    print(result.get("worker_back_s"), result["back_s"], "same lesson:",
          result["all_same_lesson"])


if __name__ == "__main__":
    main()
