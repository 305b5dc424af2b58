"""Several mixer nodes (issue 20): two ``syncclass mixer --node-id`` processes and a real
Redis on loopback. A classroom that contacts the wrong node is redirected to its lesson's
node and gets decoded frames; ``kill -9`` of that node puts every classroom back in the
same lesson on the survivor within 10 s; the recorder (subscribed to both nodes) keeps
the lesson in one recording with a gap, and the survivor's report covers the lesson
before the kill too (from n1's analytics checkpoint in Redis) with the gap. With media
workers (``mixer.workers: 2`` on each node): ``kill -9`` of the lesson's worker puts the
classrooms back in the same lesson on the same node (its front restarts the worker, which
resumes the lesson from Redis); ``kill -9`` of that node then moves it to the other."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from syncclass.demo import http_json
from syncclass.testing.cluster_support import ClusterDeployment
from tests.cluster import light_cluster
from tests.county import County

pytestmark = pytest.mark.integration

MAIN, RURAL = "main-3-1", "hetou-3"


@pytest.fixture
def cluster(tmp_path: Path, county: County) -> Iterator[ClusterDeployment]:
    yield from light_cluster(county, tmp_path)


@pytest.mark.timeout(150)
def test_redirect_then_kill_the_lessons_node(cluster: ClusterDeployment, tmp_path: Path) -> None:
    cluster.start_node("n1")
    cluster.start_node("n2")
    cluster.start_recorder(tmp_path / "rec")
    # The main classroom enters at n1; the rural one at n2: one of them is redirected so
    # both end on the node the pairing is placed on.
    cluster.start_agent(MAIN, "n1", out_dir=tmp_path / "classrooms")
    cluster.dep.wait_for(lambda: cluster.dep.agent_status(MAIN)["state"] == "connected", 30,
                         "main connected")
    cluster.start_agent(RURAL, "n2", out_dir=tmp_path / "classrooms")
    cluster.dep.wait_for(lambda: cluster.dep.agent_status(RURAL)["state"] == "connected", 30,
                         "rural connected")
    owner = cluster.node_of_agent(MAIN)
    assert owner == "n1"  # as loaded as n2: the node asked keeps it (no redirect hop)
    assert cluster.node_of_agent(RURAL) == "n1"
    assert cluster.dep.agent_status(RURAL)["redirects"] == 1
    status, lesson = cluster.dep.agent_command(MAIN, "start")
    assert status == 200, lesson
    lesson_id = lesson["lesson_id"]
    for cid in (MAIN, RURAL):
        cluster.wait_for(lambda c=cid: cluster.in_lesson_with_frames(c, lesson_id, "n1", 20),
                         30, f"{cid} decoding frames on n1")
    # Wait for the recorder to have a few seconds of the lesson from n1.
    cluster.dep.wait_for(lambda: (tmp_path / "rec" / "lessons" / lesson_id).is_dir(), 20,
                         "the recording started")
    time.sleep(4.0)
    t_kill_ms = int(time.time() * 1000)
    cluster.kill_node("n1")
    back_s = cluster.wait_for(  # from the kill until every classroom has frames again
        lambda: all(cluster.in_lesson_with_frames(c, lesson_id, "n2", 5) for c in (MAIN, RURAL)),
        20, "every classroom back in the lesson on n2")
    lessons = cluster.node_status("n2")["lessons"]
    assert [(x["lesson_id"], x["state"], x["started_ms"]) for x in lessons] == [
        (lesson_id, "live", lesson["started_ms"])]
    time.sleep(4.0)
    status, ended = cluster.dep.agent_command(MAIN, "end")
    assert status == 200 and ended["lesson_id"] == lesson_id, ended

    def ready() -> dict[str, Any] | None:
        body = http_json(cluster.url("n2") + "/api/recorder", token=cluster.dep.ops_token)[1]
        return body["ready"].get(lesson_id)

    cluster.dep.wait_for(lambda: ready() is not None, 60, "the recording")
    recording = ready()
    assert recording is not None
    meta = json.loads(Path(recording["locations"]["metadata.json"]).read_text())
    print("\nfail-over:", json.dumps({"back_s": back_s, "gaps": meta["gaps"]}))
    assert back_s < 10.0, back_s
    assert meta["lesson_id"] == lesson_id
    assert [g["reason"] for g in meta["gaps"]] == ["mixer_restart"], meta["gaps"]
    gap = meta["gaps"][0]
    before = [s for s in meta["segments"] if s["start_s"] < gap["start_s"]]
    after = [s for s in meta["segments"] if s["start_s"] >= gap["start_s"] + gap["duration_s"]]
    assert sum(s["duration_s"] for s in before) >= 3.0, meta["segments"]
    assert sum(s["duration_s"] for s in after) >= 2.0, meta["segments"]
    with av.open(recording["locations"]["lesson.mp4"]) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    assert times[-1] - times[0] > gap["start_s"] + gap["duration_s"], (times[0], times[-1])
    # The report (written by n2) has both classrooms from n1's part: present until n1's
    # last checkpoint, absent during the gap, present again on n2.
    report_path = tmp_path / "mixer-n2" / "reports" / lesson_id / "report.json"
    cluster.dep.wait_for(report_path.is_file, 20, "n2's report")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    [gap] = report["gaps"]
    assert gap["checkpoint"] is True and gap["start_ms"] <= t_kill_ms < gap["end_ms"], gap
    assert t_kill_ms - gap["start_ms"] <= 2500, gap  # checkpoint_s 2 s (+ a heartbeat)
    for room in report["classrooms"]:
        if room["classroom_id"] not in (MAIN, RURAL):
            continue
        reasons = [x["reason"] for x in room["sessions"]]
        assert reasons[0] == "node_lost" and reasons[-1] == "lesson_ended", room["sessions"]
        assert room["sessions"][0]["join_ms"] < t_kill_ms - 4000, room["sessions"]
        assert room["sessions"][-1]["join_ms"] >= gap["end_ms"], (room["sessions"], gap)


@pytest.fixture
def cluster_of_workers(tmp_path: Path, county: County) -> Iterator[ClusterDeployment]:
    # Light media: two nodes of a front and two workers each, two agents, on two cores.
    yield from light_cluster(
        county, tmp_path,
        media={"width": 320, "height": 180, "bitrate_kbps": 300, "uplink_bitrate_kbps": 200},
        camera={"width": 160, "height": 90, "fps": 15}, workers=2, recorder=False)


@pytest.mark.timeout(120)
def test_kill_the_lessons_worker_then_its_node(cluster_of_workers: ClusterDeployment) -> None:
    c = cluster_of_workers
    c.start_node("n1")
    c.start_node("n2")
    for cid in (MAIN, RURAL):
        c.start_agent(cid, "n1")
    c.dep.wait_for(lambda: all(c.dep.agent_status(x)["state"] == "connected"
                               for x in (MAIN, RURAL)), 30, "agents connected")
    status, lesson = c.dep.agent_command(MAIN, "start")
    assert status == 200, lesson
    lesson_id = lesson["lesson_id"]
    c.wait_for(lambda: all(c.in_lesson_with_frames(x, lesson_id, "n1", 15)
                           for x in (MAIN, RURAL)), 30, "the lesson running on n1")
    [worker] = [x["worker"] for x in c.node_status("n1")["lessons"]
                if x["lesson_id"] == lesson_id]
    workers = {w["worker"]: w for w in c.node_stats("n1")["node"]["workers"]}
    reconnects = {x: c.dep.agent_status(x)["reconnects"] for x in (MAIN, RURAL)}
    os.kill(workers[worker]["pid"], signal.SIGKILL)

    def back_on(node_id: str, seen: dict[str, int]) -> bool:
        return all(c.dep.agent_status(x)["reconnects"] > seen[x]
                   and c.in_lesson_with_frames(x, lesson_id, node_id, 5) for x in (MAIN, RURAL))

    worker_back_s = c.wait_for(lambda: back_on("n1", reconnects), 30,
                               "every classroom back in the lesson on n1")
    [resumed] = [x for x in c.node_status("n1")["lessons"] if x["state"] == "live"]
    assert (resumed["lesson_id"], resumed["started_ms"], resumed["worker"]) == (
        lesson_id, lesson["started_ms"], worker)
    after = {w["worker"]: w for w in c.node_stats("n1")["node"]["workers"]}
    assert after[worker]["restarts"] == 1 and after[worker]["pid"] != workers[worker]["pid"]
    assert after[1 - worker]["pid"] == workers[1 - worker]["pid"]  # its sibling untouched
    assert c.node_status("n2")["lessons"] == []
    # The whole node dies: the other node resumes the lesson (its workers beat no more).
    reconnects = {x: c.dep.agent_status(x)["reconnects"] for x in (MAIN, RURAL)}
    c.kill_node("n1")
    node_back_s = c.wait_for(lambda: back_on("n2", reconnects), 30,
                             "every classroom back in the lesson on n2")
    lessons = c.node_status("n2")["lessons"]
    assert [(x["lesson_id"], x["state"], x["started_ms"]) for x in lessons] == [
        (lesson_id, "live", lesson["started_ms"])]
    print("\nfail-over with workers:", json.dumps({"worker_back_s": round(worker_back_s, 2),
                                                   "node_back_s": round(node_back_s, 2)}))
    assert worker_back_s < 20.0 and node_back_s < 15.0
