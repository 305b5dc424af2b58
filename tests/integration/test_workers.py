"""A node with two media workers (issue 20): two lessons land on different worker
processes and both classrooms' views decode; a worker killed with SIGKILL is restarted by
the front, its lesson resumes and its classrooms rejoin by themselves while the other
lesson never drops; the lesson on worker 1 is recorded; the APIs and ``/metrics`` show
both workers; the front refuses a bad first message or credential as the mixer does."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncclass.demo import LocalDeployment
from tests.county import County

pytestmark = pytest.mark.integration

LESSON_A = ("main-3-1", "hetou-3")
LESSON_B = ("main-b", "rural-b")


def two_pairings(county: County) -> County:
    """The sample county plus a second pairing (main-b teaching rural-b)."""
    d = county.data
    d["schools"] += [{"id": "school-b", "name": "第二小学", "kind": "main"},
                     {"id": "point-b", "name": "乙教学点", "kind": "receiving"}]
    d["classrooms"] += [
        {"id": "main-b", "school": "school-b", "name": "第二小学 一班", "label": "Main B",
         "role": "main", "token": "demo-main-b-0123456789", "tone_hz": 550},
        {"id": "rural-b", "school": "point-b", "name": "乙教学点 一年级", "label": "Rural B",
         "role": "receiving", "token": "demo-rural-b-0123456789", "tone_hz": 770}]
    d["pairings"] = [{"id": "shiyan-rural-math", "main": "main-3-1", "receiving": ["hetou-3"]},
                     {"id": "pair-b", "main": "main-b", "receiving": ["rural-b"]}]
    d["observers"][0]["pairings"] = ["shiyan-rural-math", "pair-b"]
    d["timetable"].append({**d["timetable"][0], "id": "chinese-b", "pairing": "pair-b",
                           "subject": "语文"})
    return county


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    tmp = tmp_path_factory.mktemp("workers")
    county = two_pairings(County(tmp))
    county.mixer.update(workers=2, data_dir=str(tmp / "mixer-data"))
    # Light media: four agents, two workers and a recorder on two shared cores.
    county.data["media"].update(width=320, height=180, bitrate_kbps=300,
                                uplink_bitrate_kbps=200)
    county.synthetic_cameras(width=160, height=90, fps=15)
    county.data["analytics"] = {"enabled": False}
    d = LocalDeployment(county.write(), tmp)
    try:
        d.start_mixer(timeout=60)
        d.start_recorder()
        for cid in (*LESSON_A, *LESSON_B):
            d.start_agent(cid, out_dir=tmp / "classrooms")
        yield d
    except BaseException:
        d.write_logs(40)
        raise
    finally:
        d.stop_all()


def _advances(dep: LocalDeployment, cid: str, source: str) -> int:
    """Decoded frames of ``source`` whose burned-in timecode moved on, at ``cid``."""
    rx = dep.agent_status(cid)["reception"]
    return int(rx["latency_ms"].get(source, {}).get("timecode_advances", 0)) if rx else 0


def _peer(dep: LocalDeployment, cid: str) -> str | None:
    room = dep.mixer_status()["classrooms"].get(cid)
    return None if room is None else room["peer"]


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback: served without token
        return str(resp.read().decode())


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer does: its parent, the killed front, never
    reaps it, and this machine's init may not either)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _workers(dep: LocalDeployment) -> list[dict[str, Any]]:
    return list(dep.mixer_stats()["node"]["workers"])


@pytest.mark.timeout(150)
def test_two_workers_restart_and_record(dep: LocalDeployment) -> None:
    dep.wait_for(lambda: {*LESSON_A, *LESSON_B} <= set(dep.mixer_status()["classrooms"]),
                 40, "agents connected")
    ids = {}
    for main, _ in (LESSON_A, LESSON_B):
        status, lesson = dep.agent_command(main, "start")
        assert status == 200, lesson
        ids[main] = lesson["lesson_id"]
    dep.wait_for(lambda: all(_peer(dep, c) == "connected" for c in (*LESSON_A, *LESSON_B)),
                 40, "every classroom joined")
    lessons = {x["lesson_id"]: x for x in dep.mixer_status()["lessons"]}
    on = {main: lessons[ids[main]]["worker"] for main in ids}
    assert sorted(on.values()) == [0, 1], lessons  # one lesson per worker
    # Both lessons' views decode: the rural rooms see their teacher's timecode advance.
    dep.wait_for(lambda: all(_advances(dep, r, m) >= 30 for m, r in (LESSON_A, LESSON_B)),
                 30, "views decoded in both lessons")
    workers = _workers(dep)
    assert dep.mixer_stats()["process"]["tasks"] > 0  # the front's own, for leak checks
    assert [w["lessons"] for w in sorted(workers, key=lambda w: w["worker"])] == [
        [ids[m]] for m in sorted(ids, key=lambda m: on[m])]
    metrics = _text(dep.mixer_url + "/metrics")
    for i in (0, 1):
        assert f'syncclass_node_worker_live_lessons{{worker="{i}"}} 1.0' in metrics, metrics
        assert f'worker="{i}"' in metrics.replace("syncclass_node_", "")
    # Every worker lists every classroom: /metrics shows each once, from its own worker.
    fams = {f.name: f for f in text_string_to_metric_families(metrics)}
    up = [(s.labels["classroom"], s.labels["state"], s.labels["worker"])
          for s in fams["syncclass_classroom_up"].samples
          if s.labels["classroom"] in {*LESSON_A, *LESSON_B}]
    assert sorted(c for c, _, _ in up) == sorted((*LESSON_A, *LESSON_B)), up
    assert all(state == "in_lesson" for _, state, _ in up), up
    assert {c: int(w) for c, _, w in up} == {c: on[m] for m, r in (LESSON_A, LESSON_B)
                                             for c in (m, r)}, up

    # A worker dies: the front restarts it and lesson B resumes there.
    victim = on[LESSON_B[0]]
    pid = next(w["pid"] for w in workers if w["worker"] == victim)
    reconnects_a = {c: dep.agent_status(c)["reconnects"] for c in LESSON_A}
    before_a = _advances(dep, LESSON_A[1], LESSON_A[0])
    os.kill(pid, signal.SIGKILL)
    t_kill = time.monotonic()
    dep.wait_for(lambda: any(w["worker"] == victim and w["pid"] != pid and w["up"]
                             for w in _workers(dep)), 20, "worker restarted")
    base_b = _advances(dep, LESSON_B[1], LESSON_B[0])
    dep.wait_for(lambda: _advances(dep, LESSON_B[1], LESSON_B[0]) >= base_b + 15, 30,
                 "lesson B's views decoded again", interval=0.2)
    back_s = time.monotonic() - t_kill
    lessons = {x["lesson_id"]: x for x in dep.mixer_status()["lessons"]}
    assert lessons[ids[LESSON_B[0]]]["state"] == "live"  # the same lesson, resumed
    assert lessons[ids[LESSON_B[0]]]["worker"] == victim
    for cid in LESSON_B:
        assert dep.agent_status(cid)["reconnects"] >= 1
        assert dep.agent_status(cid)["lesson"]["lesson_id"] == ids[LESSON_B[0]]
    # Lesson A never dropped: no reconnect, and its view kept decoding all along.
    assert {c: dep.agent_status(c)["reconnects"] for c in LESSON_A} == reconnects_a
    gained = _advances(dep, LESSON_A[1], LESSON_A[0]) - before_a
    assert gained >= 10 * (time.monotonic() - t_kill) - 10, gained
    restarts = {w["worker"]: w["restarts"] for w in _workers(dep)}
    assert restarts == {victim: 1, 1 - victim: 0}
    print("\nworker restart:", json.dumps({"classrooms_back_s": round(back_s, 2)}))
    assert back_s < 25.0

    # The lesson on worker 1 reaches the recorder (it connects to every worker's endpoint).
    recorded = ids[next(m for m in ids if on[m] == 1)]
    main_1 = next(m for m in ids if on[m] == 1)
    time.sleep(3.0)
    status, ended = dep.agent_command(main_1, "end")
    assert status == 200 and ended["lesson_id"] == recorded, ended
    dep.wait_for(lambda: recorded in dep.recorder_status()["ready"], 60, "the recording")
    meta = json.loads(Path(dep.recorder_status()["ready"][recorded]["locations"]
                           ["metadata.json"]).read_text())
    assert meta["video_duration_s"] >= 2.0, meta


async def _dashboard(base: str) -> tuple[dict[str, Any], bytes]:
    """Log in as the sample county's ops user through the front (a worker answers), then
    read the merged snapshot and the first server-sent event."""
    # unsafe: keep cookies of an IP-address host (127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(base + "/dashboard/login", allow_redirects=False,
                                data={"user": "ops", "password": "syncclass-demo"},
                                headers={"Origin": base}) as r:
            assert r.status == 303, await r.text()
        async with session.get(base + "/dashboard/api/snapshot") as r:
            assert r.status == 200, await r.text()
            snapshot = await r.json()
        async with session.get(base + "/dashboard/events") as r:
            assert r.status == 200
            first = await r.content.readuntil(b"\n\n")
        return snapshot, first


@pytest.mark.timeout(60)
def test_dashboard_over_workers(dep: LocalDeployment) -> None:
    """One login is valid on every worker (shared session secret): the snapshot and the
    events merge both workers, each with its health and process figures."""
    snapshot, first = asyncio.run(_dashboard(dep.mixer_url))
    workers = snapshot["node"]["workers"]
    assert [w["worker"] for w in workers] == [0, 1]
    assert all(w["up"] and w["mixer"] is not None and w["rss_bytes"] > 0 for w in workers)
    # Every worker lists every classroom; each card is the one of the worker serving it.
    rooms = {r["classroom_id"]: r for r in snapshot["classrooms"]}
    assert len(rooms) == len(snapshot["classrooms"]), snapshot["classrooms"]
    for cid in (*LESSON_A, *LESSON_B):
        assert rooms[cid]["state"] != "offline", rooms[cid]
    assert first.startswith(b"event: init\ndata: ")
    init = json.loads(first.split(b"data: ", 1)[1])
    assert len(init["node"]["workers"]) == 2
    assert all(init["history"][cid] for cid in (*LESSON_A, *LESSON_B)), init["history"]
    # Without the session both are refused, as on one process.
    try:
        _text(dep.mixer_url + "/dashboard/api/snapshot")
        raise AssertionError("served without a session")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401


async def _logout_then_ask_each_worker(base: str, sockets: list[Path]) -> list[int]:
    """Log in and out through the front; then the status each worker itself answers the
    (logged out) session's snapshot with, asked on its own unix socket."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(base + "/dashboard/login", allow_redirects=False,
                                data={"user": "ops", "password": "syncclass-demo"},
                                headers={"Origin": base}) as r:
            assert r.status == 303, await r.text()
        cookie = next(c.value for c in session.cookie_jar if c.key == "syncclass_ops")
        async with session.get(base + "/dashboard/api/snapshot") as r:
            assert r.status == 200
        async with session.post(base + "/dashboard/logout", allow_redirects=False,
                                headers={"Origin": base}) as r:
            assert r.status == 303, await r.text()
    statuses = []
    for sock in sockets:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s:
            async with s.get("http://worker/dashboard/api/snapshot",
                             headers={"Cookie": f"syncclass_ops={cookie}"}) as r:
                statuses.append(r.status)
    return statuses


@pytest.mark.timeout(60)
def test_logout_reaches_every_worker(dep: LocalDeployment) -> None:
    """A logout through the front revokes the session on every worker (one login is valid
    on all), not only on the worker that serves the dashboard's pages."""
    run = Path(dep.config.mixer.data_dir) / "run"
    sockets = [run / f"worker-{i}.sock" for i in (0, 1)]
    assert asyncio.run(_logout_then_ask_each_worker(dep.mixer_url, sockets)) == [401, 401]


@pytest.mark.timeout(90)
def test_front_killed_lessons_resume(dep: LocalDeployment) -> None:
    """``syncclass mixer`` (the front) dies by SIGKILL: its workers stop as their pipe
    closes, and the restarted node resumes the live lesson on the same worker, where its
    classrooms rejoin by themselves."""
    live = [x for x in dep.mixer_status()["lessons"] if x["state"] == "live"]
    assert len(live) == 1, live  # lesson A (lesson B ended in the first test)
    lesson, old = live[0], _workers(dep)
    main, rural = next(pair for pair in (LESSON_A, LESSON_B) if pair[0] == lesson["main"])
    dep.stop("mixer", signal.SIGKILL)
    t_kill = time.monotonic()
    dep.start_mixer(timeout=60)
    assert not any(_running(w["pid"]) for w in old)  # no orphan workers
    resumed = {x["lesson_id"]: x for x in dep.mixer_status()["lessons"]}
    assert resumed[lesson["lesson_id"]]["state"] == "live"
    assert resumed[lesson["lesson_id"]]["worker"] == lesson["worker"]
    base = _advances(dep, rural, main)
    dep.wait_for(lambda: _advances(dep, rural, main) >= base + 15, 40,
                 "the resumed lesson's view decoded again")
    print("\nfront restart:", json.dumps({"view_back_s": round(time.monotonic() - t_kill, 2)}))
    assert dep.agent_status(rural)["lesson"]["lesson_id"] == lesson["lesson_id"]


async def _first_reply(url: str, *messages: str) -> tuple[list[dict[str, Any]], int | None]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for m in messages:
            await ws.send_str(m)
        replies = []
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                replies.append(json.loads(msg.data))
                if len(replies) == len(messages):
                    break
        if replies and replies[-1].get("code") in ("auth_failed", "rate_limited"):
            await ws.receive(timeout=5)  # the close
        return replies, ws.close_code


@pytest.mark.timeout(60)
def test_front_refuses_as_the_mixer_does(dep: LocalDeployment) -> None:
    url = dep.mixer_url.replace("http", "ws") + "/ws"
    replies, _ = asyncio.run(_first_reply(url, "{not json", json.dumps({"type": "ping", "id": 1}),
                                          "x" * 70000))
    assert [r["code"] for r in replies] == ["bad_json", "auth_required", "too_large"], replies
    # An observer reaches the worker of the pairing it watches: only that one knows the
    # live lesson (lesson A; lesson B ended in the first test).
    observer = {"type": "observer_hello", "observer_id": "jiaoyan-li",
                "token": "demo-observer-li-4b7e19c2d8"}
    live = next(x for x in dep.mixer_status()["lessons"] if x["state"] == "live")
    for pairing in ("shiyan-rural-math", "pair-b"):
        replies, _ = asyncio.run(_first_reply(url, json.dumps({**observer,
                                                                "pairing_id": pairing})))
        assert replies[0]["type"] == "observer_welcome", replies
        assert replies[0]["pairing_id"] == pairing
        lesson = replies[0]["lesson"]
        if pairing == live["pairing_id"]:
            assert lesson is not None and lesson["lesson_id"] == live["lesson_id"], replies
        else:
            assert lesson is None or lesson["state"] != "live", replies
    hello = {"type": "hello", "classroom_id": "hetou-3", "token": "wrong-token-0123456789"}
    replies, code = asyncio.run(_first_reply(url, json.dumps(hello)))
    assert [r["code"] for r in replies] == ["auth_failed"], replies
    assert code is not None and code != 1012
    # Failed credentials count at the front across workers: the limit (10/min) holds.
    codes = []
    for cid in ("hetou-3", "rural-b") * 6:
        got, _ = asyncio.run(_first_reply(url, json.dumps({**hello, "classroom_id": cid})))
        codes.append(got[0]["code"])
    assert "rate_limited" in codes, codes
    assert codes.count("auth_failed") <= 10, codes
