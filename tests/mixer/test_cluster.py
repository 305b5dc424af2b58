"""Several mixer nodes on a real Redis (scripts/redisserver.sh): registry, placement,
redirect, fail-over of a live lesson, Redis down and back. Two nodes run in this process
(aiohttp test servers on loopback; no media)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from mixer.app import create_app
from mixer.cluster import CLUSTER_KEY, Cluster
from mixer.core import MIXER_KEY, Mixer
from mixer.node import Node, merge_cluster, merge_metrics
from syncclass.analytics.checkpoint import MAX_CHECKPOINT_BYTES
from syncclass.config import CountyConfig
from syncclass.demo import free_port
from syncclass.errors import ConfigError
from syncclass.placement import (
    NodeLoad,
    node_load_of,
    pick_node,
    recorder_endpoints,
    slot_field_names,
    slot_fields,
)
from syncclass.protocol import Redirect, parse_server_message
from syncclass.testing.redis_support import RedisServer
from tests.county import County

MAIN, RURAL, RURAL2, PAIRING = "main-3-1", "hetou-3", "shanping-3", "shiyan-rural-math"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(free_port()) as server:
        yield server


def _cluster_config(tmp: Path, redis_url: str, ports: dict[str, int], *,
                    analytics: bool = False, **extra: Any) -> CountyConfig:
    county = County(tmp).without_services()
    if analytics:  # speech detection on; no head count (no video here)
        county.data["analytics"] = {"head_count_interval_s": 0}
    county.mixer["data_dir"] = str(tmp / "mixer-data")
    county.mixer["cluster"] = {
        "redis_url": redis_url, "heartbeat_s": 0.2, "lease_ttl_s": 0.6,
        "nodes": [{"id": n, "url": f"http://127.0.0.1:{p}"} for n, p in ports.items()],
        **extra}
    return county.config()


def _cluster_of(client: TestClient[Any, Any]) -> Cluster:
    assert client.app is not None
    return client.app[CLUSTER_KEY]


@asynccontextmanager
async def _node(config: CountyConfig, node_id: str, port: int
                ) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(config, node_id=node_id)
    async with TestClient(TestServer(app, port=port)) as client:
        yield client


async def _hello(client: TestClient[Any, Any], config: CountyConfig, cid: str) -> Any:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "hello", "classroom_id": cid,
                        "token": config.classroom(cid).token})
    msg = await ws.receive(timeout=5)
    reply = parse_server_message(msg.data)
    return ws, reply


# -- pure parts ------------------------------------------------------------------------------
def test_node_load_round_trip_and_pick() -> None:
    a = NodeLoad("a", "http://a:1", 2, 6, 150.0, 1000, ("l1", "l2"))
    assert NodeLoad.from_fields("a", a.to_fields()) == a
    b = NodeLoad("b", "http://b:1", 1, 9, 300.0, 1000)
    c = NodeLoad("c", "http://c:1", 1, 3, 90.0, 1000)
    assert pick_node([a, b, c]) == c  # fewest lessons, then fewest classrooms
    assert pick_node([a, b, c], here="b") == b  # as few lessons: no redirect hop
    assert pick_node([a, b, c], here="a") == c
    assert pick_node([]) is None
    with pytest.raises(ValueError, match="lacks 'url'"):
        NodeLoad.from_fields("a", {"lessons": "1"})
    with pytest.raises(ValueError, match="malformed"):
        NodeLoad.from_fields("a", {**a.to_fields(), "lessons": "many"})


def test_config_errors_in_words(tmp_path: Path) -> None:
    ports = {"n1": 1, "n2": 2}
    with pytest.raises(ConfigError, match="node_id 'n9' is not one of 'nodes'"):
        _cluster_config(tmp_path, "redis://127.0.0.1:1/0", ports, node_id="n9")
    with pytest.raises(ConfigError, match="at least twice"):
        _cluster_config(tmp_path, "redis://127.0.0.1:1/0", ports, lease_ttl_s=0.3)
    with pytest.raises(ConfigError, match="use redis://"):
        _cluster_config(tmp_path, "http://127.0.0.1:1/0", ports)
    county = County(tmp_path).without_services()
    county.mixer["workers"] = "auto"
    county.mixer["cluster"] = {"redis_url": "redis://127.0.0.1:1/0", "nodes": [
        {"id": n, "url": f"http://127.0.0.1:{p}"} for n, p in ports.items()]}
    with pytest.raises(ConfigError, match=r"give mixer\.workers as a number .* not 'auto'"):
        county.config()
    cfg = _cluster_config(tmp_path, "redis://:pw@127.0.0.1:1/0", ports)
    assert "pw" not in repr(cfg.mixer.cluster)
    assert cfg.mixer.cluster is not None and cfg.mixer.cluster.vouches_for("http://127.0.0.1:2/")
    assert not cfg.mixer.cluster.vouches_for("http://evil.example:2")
    assert recorder_endpoints(cfg) == [cfg.recorder.endpoint]


def test_nodes_with_media_workers_config_and_recorder_endpoints(tmp_path: Path) -> None:
    """A node of a cluster may run its lessons in media workers; recorders then follow
    every worker of every node (worker i publishes on the node's endpoint + i)."""
    county = County(tmp_path)
    county.mixer["workers"] = 2
    county.data.setdefault("recorder", {})["endpoint"] = "tcp://127.0.0.1:5600"
    county.mixer["cluster"] = {"redis_url": "redis://127.0.0.1:1/0", "nodes": [
        {"id": "n1", "url": "http://10.0.0.11:8700",
         "recorder_endpoint": "tcp://10.0.0.11:5700"},
        {"id": "n2", "url": "http://10.0.0.12:8700"}]}
    cfg = county.config()
    assert cfg.mixer.workers == 2
    assert recorder_endpoints(cfg) == ["tcp://10.0.0.11:5700", "tcp://10.0.0.11:5701",
                                       "tcp://127.0.0.1:5600", "tcp://127.0.0.1:5601"]


def test_node_load_sums_its_live_workers() -> None:
    """Each worker writes its part of the node's hash; a reader sums the parts whose
    heartbeat is recent beside the newest (a crashed worker's part stops counting)."""
    w0 = NodeLoad("n1", "http://a:1", 1, 2, 40.0, 10_000, ("l1",))
    w1 = NodeLoad("n1", "http://a:1", 2, 4, 60.0, 10_200, ("l2", "l3"))
    dead = NodeLoad("n1", "http://a:1", 5, 9, 90.0, 6_000, ("l9",))
    fields = {**slot_fields(w0, 0), **slot_fields(w1, 1), **slot_fields(dead, 2)}
    assert sorted(slot_field_names(1)) == sorted(k for k in fields if k.startswith("w1."))
    assert node_load_of("n1", fields, stale_ms=3000) == NodeLoad(
        "n1", "http://a:1", 3, 6, 100.0, 10_200, ("l1", "l2", "l3"))
    one = NodeLoad("n2", "http://b:1", 1, 3, 20.0, 5_000, ("l4",))
    assert node_load_of("n2", slot_fields(one, None), stale_ms=3000) == one
    assert node_load_of("n2", {}, stale_ms=3000) is None
    with pytest.raises(ValueError, match="malformed"):
        node_load_of("n1", {**fields, "w1.lessons": "many"}, stale_ms=3000)


# -- on Redis ---------------------------------------------------------------------------------
async def test_redirect_to_the_lessons_node_and_fail_over(tmp_path: Path,
                                                          redis_server: RedisServer) -> None:
    ports = {"n1": free_port(), "n2": free_port()}
    config = _cluster_config(tmp_path, redis_server.url, ports)
    token = {"Authorization": f"Bearer {config.classroom(MAIN).token}"}
    async with _node(config, "n2", ports["n2"]) as n2:
        async with _node(config, "n1", ports["n1"]) as n1:
            # Both registered; the main classroom reaches n1 first: the pairing is placed
            # on the least-loaded node (equal: the node asked), and served there.
            await asyncio.sleep(0.3)
            ws_main, welcome = await _hello(n1, config, MAIN)
            assert welcome.type == "welcome"
            resp = await n1.post("/api/lessons/start", json={"classroom_id": MAIN},
                                 headers=token)
            assert resp.status == 200
            lesson = await resp.json()
            # The receiving classroom contacts n2: sent to n1, and only there.
            ws_rural, reply = await _hello(n2, config, RURAL)
            assert reply == Redirect(url=f"http://127.0.0.1:{ports['n1']}", node_id="n1")
            assert (await ws_rural.receive(timeout=5)).type.name in ("CLOSE", "CLOSED")
            # The lesson API on the wrong node answers with a redirect to the right one.
            resp = await n2.post("/api/lessons/end", json={"classroom_id": MAIN},
                                 headers=token, allow_redirects=False)
            assert resp.status == 307
            assert resp.headers["Location"] == f"http://127.0.0.1:{ports['n1']}/api/lessons/end"
            # Registry: both nodes, n1 with the live lesson.
            await asyncio.sleep(0.5)
            summary: Any = _cluster_of(n2).summary()
            nodes = {n["node_id"]: n for n in summary["nodes"]}
            assert set(nodes) == {"n1", "n2"}
            assert nodes["n1"]["lesson_ids"] == [lesson["lesson_id"]]
            metrics = await (await n2.get("/metrics")).text()
            assert 'syncclass_node_lessons{node="n1"' in metrics
            await ws_main.close()
            # n1 dies without a goodbye: its heartbeat stops (its leases are not released).
            cluster1 = _cluster_of(n1)
            assert cluster1._task is not None
            cluster1._stopping = True
            cluster1._task.cancel()
            cluster1.aclose = _noop  # type: ignore[method-assign]
            t_dead = time.monotonic()
            # Within the lease the pairing still belongs to n1: never taken from a live owner.
            _, reply = await _hello(n2, config, RURAL)
            assert isinstance(reply, Redirect)
            await asyncio.sleep(0.8)  # lease_ttl_s = 0.6: n1 is dead now
            ws_rural, welcome = await _hello(n2, config, RURAL)
            assert welcome.type == "welcome", welcome
            assert welcome.lesson is not None and welcome.lesson.state == "live"
            assert welcome.lesson.lesson_id == lesson["lesson_id"]  # the same lesson
            assert welcome.lesson.started_ms == lesson["started_ms"]
            assert time.monotonic() - t_dead < 5
            assert _cluster_of(n2).resumed == [lesson["lesson_id"]]
            await ws_rural.close()
            await cluster1.redis.aclose()  # what its (skipped) goodbye would have closed


async def _noop() -> None:
    return None


async def test_redis_down_lesson_goes_on_and_catches_up(
        tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    config = _cluster_config(tmp_path, redis_server.url, {"n1": port}, analytics=True,
                             checkpoint_s=0.2)
    token = {"Authorization": f"Bearer {config.classroom(MAIN).token}"}
    async with _node(config, "n1", port) as n1:
        ws_main, _ = await _hello(n1, config, MAIN)
        resp = await n1.post("/api/lessons/start", json={"classroom_id": MAIN}, headers=token)
        lesson_id = (await resp.json())["lesson_id"]
        cluster = _cluster_of(n1)
        redis_server.stop()  # no persistence: it comes back empty
        with caplog.at_level(logging.ERROR, logger="mixer.cluster"):
            await asyncio.sleep(1.0)  # five heartbeats against a dead Redis
            ws_rural, welcome = await _hello(n1, config, RURAL)  # still served here
        assert welcome.type == "welcome" and welcome.lesson.lesson_id == lesson_id
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors  # one clear line, not one per heartbeat
        assert "Redis at redis://127.0.0.1" in errors[0] and "live lessons go on" in errors[0]
        assert cluster.redis_up is False
        status = await (await n1.get("/api/lessons", headers=token)).json()
        assert [x["state"] for x in status["lessons"]] == ["live"]
        redis_server.start()
        await asyncio.sleep(0.6)
        assert cluster.redis_up is True
        client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
        try:  # state caught up: node, lease and live lesson written again
            assert client.hget("syncclass:node:n1", "lesson_ids") == lesson_id
            assert client.get(f"syncclass:place:{PAIRING}") == "n1"
            doc = client.get(f"syncclass:lesson:{PAIRING}")
            assert doc is not None and lesson_id in doc
            # ... and the lesson's analytics checkpoint (Redis came back empty).
            assert client.hget(f"syncclass:analytics:{PAIRING}", "lesson_id") == lesson_id
            # The lesson ends: its state leaves Redis (no survivor would resume it).
            resp = await n1.post("/api/lessons/end", json={"classroom_id": MAIN}, headers=token)
            assert resp.status == 200
            await asyncio.sleep(0.5)
            assert client.get(f"syncclass:lesson:{PAIRING}") is None
            assert client.exists(f"syncclass:analytics:{PAIRING}") == 0
        finally:
            client.close()
        await ws_main.close()
        await ws_rural.close()


# -- the report survives a fail-over ------------------------------------------------------------
def _mixer_of(client: TestClient[Any, Any]) -> Mixer:
    assert client.app is not None
    return client.app[MIXER_KEY]


async def _speak(mixer: Mixer, lesson_id: str, cid: str, seconds: float) -> None:
    """``seconds`` of a voice-like sound (140 Hz harmonics, syllable-rate envelope) and
    0.5 s of silence from ``cid``, fed to the lesson's decoded-audio taps as the media
    pipeline feeds them: in real time (speech is placed by arrival), 100 ms blocks, 48 kHz
    pts."""
    rate, n = 48000, 4800
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 30))
    voice *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    pcm = np.concatenate([voice / np.abs(voice).max() * 12000, np.zeros(rate // 2)])
    pcm = pcm.astype(np.int16)
    media = mixer.media[lesson_id]
    for i in range(0, len(pcm) - n + 1, n):
        for tap in list(media.audio_pts_taps):
            tap(cid, pcm[i:i + n], i)
        await asyncio.sleep(n / rate)


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


async def _hand(client: TestClient[Any, Any], config: CountyConfig, cid: str) -> None:
    resp = await client.post("/api/hand", json={"classroom_id": cid}, headers={
        "Authorization": f"Bearer {config.classroom(cid).token}"})
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("checkpoint", ["written", "garbage", "oversized"])
async def test_report_covers_the_lesson_before_and_after_a_fail_over(
        tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture,
        checkpoint: str) -> None:
    ports = {"n1": free_port(), "n2": free_port()}
    config = _cluster_config(tmp_path, redis_server.url, ports, analytics=True,
                             checkpoint_s=0.2)
    # Each node its own data folder: n2's report is n2's work only.
    config2 = config.model_copy(update={"mixer": config.mixer.model_copy(
        update={"data_dir": str(tmp_path / "n2-data")})})
    token = {"Authorization": f"Bearer {config.classroom(MAIN).token}"}
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    key = f"syncclass:analytics:{PAIRING}"
    async with _node(config2, "n2", ports["n2"]) as n2, _node(config, "n1", ports["n1"]) as n1:
        await asyncio.sleep(0.3)
        ws_main, _ = await _hello(n1, config, MAIN)
        resp = await n1.post("/api/lessons/start", json={"classroom_id": MAIN}, headers=token)
        lesson = await resp.json()
        lesson_id = lesson["lesson_id"]
        # On n1: both classrooms' media arrive (the bus events the media layer emits), a
        # hand is raised, the teacher speaks.
        m1 = _mixer_of(n1)
        m1.emit("classroom_joined", lesson_id, MAIN)
        m1.emit("classroom_joined", lesson_id, RURAL)
        await _hand(n1, config, RURAL)
        await _speak(m1, lesson_id, MAIN, 1.0)
        await asyncio.sleep(0.3)  # another checkpoint (checkpoint_s = 0.2)
        assert client.hget(key, "lesson_id") == lesson_id
        # n1 dies without a goodbye.
        cluster1 = _cluster_of(n1)
        assert cluster1._task is not None
        cluster1._stopping = True
        cluster1._task.cancel()
        cluster1.aclose = _noop  # type: ignore[method-assign]
        t_dead_ms = int(time.time() * 1000)
        await ws_main.close()
        if checkpoint == "garbage":
            client.set(key, "not a hash")
        elif checkpoint == "oversized":
            client.hset(key, "doc", "x" * (MAX_CHECKPOINT_BYTES + 1))
        await asyncio.sleep(0.8)  # lease_ttl_s = 0.6: n1 is dead now
        with caplog.at_level(logging.ERROR):
            ws_rural, welcome = await _hello(n2, config, RURAL)
        assert welcome.type == "welcome" and welcome.lesson.lesson_id == lesson_id
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        if checkpoint == "written":
            assert errors == []
        else:  # one clear line; the lesson goes on with fresh analytics
            assert len(errors) == 1 and "analytics checkpoint" in errors[0], errors
            assert "report covers the lesson from its resumption on" in errors[0]
        # On n2: the classrooms rejoin, another hand (another classroom: no debounce), the
        # rural classroom speaks; then the lesson ends there.
        m2 = _mixer_of(n2)
        m2.emit("classroom_joined", lesson_id, RURAL)
        m2.emit("classroom_joined", lesson_id, MAIN)
        await _hand(n2, config, RURAL2)
        await _speak(m2, lesson_id, RURAL, 0.6)
        resp = await n2.post("/api/lessons/end", json={"classroom_id": MAIN}, headers=token)
        assert resp.status == 200
        for _ in range(200):
            ready = [e for e in m2.events.history if e.name == "report_ready"]
            if ready:
                break
            await asyncio.sleep(0.05)
        assert ready, "no report from n2"
        report = json.loads(_read(ready[0].data["json"]))
        rooms = {c["classroom_id"]: c for c in report["classrooms"]}
        assert rooms[RURAL2]["hand_raises"]["count"] == 1  # n2's part, in every case
        assert rooms[RURAL]["speech"]["turns"] == 1
        if checkpoint == "written":  # n1's part is in the report: its hand, the speech
            assert rooms[RURAL]["hand_raises"]["count"] == 1
            assert rooms[MAIN]["speech"]["turns"] == 1
            assert rooms[MAIN]["speech"]["talk_s"] >= 0.8
        [gap] = report["gaps"]
        assert gap["reason"] == "node_lost"
        resumed_ms = gap["end_ms"]
        assert t_dead_ms < resumed_ms < rooms[RURAL]["sessions"][-1]["join_ms"] + 1
        if checkpoint == "written":
            # Attendance until n1's last checkpoint; absent during the gap; present on n2.
            assert gap["checkpoint"] is True and gap["start_ms"] <= t_dead_ms
            for cid in (MAIN, RURAL):
                sessions = rooms[cid]["sessions"]
                assert [x["reason"] for x in sessions] == ["node_lost", "lesson_ended"]
                assert sessions[0]["leave_ms"] == gap["start_ms"]
                assert sessions[1]["join_ms"] >= gap["end_ms"]
                [first, second] = rooms[cid]["present_intervals"]
                assert first[1] == gap["start_ms"] and second[0] >= gap["end_ms"]
            assert "Gaps (a mixer node stopped" in _read(ready[0].data["html"])
        else:  # the part before is lost, and the report says so
            assert gap["checkpoint"] is False and gap["start_ms"] == lesson["started_ms"]
            assert rooms[RURAL]["hand_raises"]["count"] == 0
            assert rooms[MAIN]["speech"]["turns"] == 0
        await asyncio.sleep(0.5)  # the heartbeat deletes the ended lesson's checkpoint
        assert client.exists(key) == 0
        await ws_rural.close()
        await cluster1.redis.aclose()
    client.close()


async def test_a_node_stopped_on_purpose_checkpoints_last(tmp_path: Path,
                                                          redis_server: RedisServer) -> None:
    """A node leaving the cluster (rolling restart) writes its lessons' analytics once
    more as it leaves, however recent its last checkpoint: nothing since is lost."""
    port = free_port()
    config = _cluster_config(tmp_path, redis_server.url, {"n1": port}, analytics=True,
                             checkpoint_s=60)
    token = {"Authorization": f"Bearer {config.classroom(MAIN).token}"}
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    key = f"syncclass:analytics:{PAIRING}"
    async with _node(config, "n1", port) as n1:
        ws_main, _ = await _hello(n1, config, MAIN)
        resp = await n1.post("/api/lessons/start", json={"classroom_id": MAIN}, headers=token)
        lesson_id = (await resp.json())["lesson_id"]
        await asyncio.sleep(0.5)  # heartbeats: the first checkpoint, then none for 60 s
        first = json.loads(client.hget(key, "doc") or "{}")
        assert first["lesson_id"] == lesson_id and first["hands"] == {}
        await _hand(n1, config, RURAL)
        await _cluster_of(n1).aclose()  # the goodbye (the app's shutdown calls it)
        last = json.loads(client.hget(key, "doc") or "{}")
        assert len(last["hands"][RURAL]) == 1
        assert client.get(f"syncclass:place:{PAIRING}") is None  # leases released
        await ws_main.close()
    client.close()


# -- a node with media workers -----------------------------------------------------------------
@asynccontextmanager
async def _worker(config: CountyConfig, node_id: str, index: int
                  ) -> AsyncIterator[TestClient[Any, Any]]:
    """Media worker ``index`` of ``node_id``: the app a worker process serves (here on a
    loopback port; the node's front, which routes by pairing group, is left out)."""
    app = create_app(config, node_id=node_id, worker=index,
                     lessons_path=Path(config.mixer.data_dir) / f"w{index}" / "lessons.json")
    async with TestClient(TestServer(app)) as client:
        yield client


def _crash(cluster: Cluster) -> None:
    """The worker dies without a goodbye: its heartbeat stops, nothing is released."""
    assert cluster._task is not None
    cluster._stopping = True
    cluster._task.cancel()
    cluster.aclose = _noop  # type: ignore[method-assign]


async def test_a_node_of_media_workers(tmp_path: Path, redis_server: RedisServer) -> None:
    """Node n1 runs two media workers, each beating for n1: the registry shows n1's whole
    load; a classroom at n2 is sent to n1 while n1's worker 1 runs the lesson; worker 1
    crashes, and while the front restarts it (longer than the lease) its sibling keeps the
    lesson placed on n1, where the restarted worker resumes the same lesson. A worker's
    clean stop leaves the node's entry and its sibling's leases alone."""
    ports = {"n1": free_port(), "n2": free_port()}
    config = _cluster_config(tmp_path, redis_server.url, ports)
    config = config.model_copy(update={"mixer": config.mixer.model_copy(
        update={"workers": 2})})
    token = {"Authorization": f"Bearer {config.classroom(MAIN).token}"}
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    place_key, node_key = f"syncclass:place:{PAIRING}", "syncclass:node:n1"
    async with (_node(config, "n2", ports["n2"]) as n2, _worker(config, "n1", 0) as w0,
                _worker(config, "n1", 1) as w1):
        await asyncio.sleep(0.3)
        ws_main, welcome = await _hello(w1, config, MAIN)  # the front routed it to worker 1
        assert welcome.type == "welcome"
        resp = await w1.post("/api/lessons/start", json={"classroom_id": MAIN}, headers=token)
        assert resp.status == 200
        lesson = await resp.json()
        await asyncio.sleep(0.5)
        # n1 in the registry: worker 1's lesson and classroom, not overwritten by worker 0.
        nodes = {n["node_id"]: n for n in _cluster_of(n2).summary()["nodes"]}  # type: ignore
        assert nodes["n1"]["lesson_ids"] == [lesson["lesson_id"]]
        assert (nodes["n1"]["lessons"], nodes["n1"]["sessions"]) == (1, 1)
        assert client.get(place_key) == "n1"
        _, reply = await _hello(n2, config, RURAL)
        assert reply == Redirect(url=f"http://127.0.0.1:{ports['n1']}", node_id="n1")
        # The front shows the registry once (both workers read it), with worker labels
        # elsewhere; the dashboard's cluster view likewise.
        node = Node(config, 2, ["true"])
        texts = [await (await w.get("/metrics")).text() for w in (w0, w1)]
        families = merge_metrics(node, list(zip(node.workers, texts, strict=True)))
        lessons = [(s.labels, s.value) for s in families["syncclass_node_lessons"].samples]
        assert sorted((labels["node"], v) for labels, v in lessons) == [("n1", 1.0),
                                                                         ("n2", 0.0)]
        assert all("worker" not in labels for labels, _ in lessons)
        up = families["syncclass_cluster_redis_up"].samples
        assert sorted(s.labels["worker"] for s in up) == ["0", "1"]
        views = [_cluster_of(w).summary() for w in (w0, w1)]
        merged: Any = merge_cluster(views)
        assert [n["node_id"] for n in merged["nodes"]] == ["n1", "n2"]
        assert merged["redis_up"] is True and "worker" not in merged

        # Worker 1 crashes; the front restarts it after a while (longer than lease_ttl_s).
        _crash(_cluster_of(w1))
        await ws_main.close()
        await asyncio.sleep(1.5)  # lease_ttl_s 0.6: without worker 0 the lease expires
        assert client.get(place_key) == "n1"  # worker 0 keeps n1's lesson placed on n1
        _, reply = await _hello(n2, config, RURAL)
        assert isinstance(reply, Redirect) and reply.node_id == "n1"
        nodes = {n["node_id"]: n for n in _cluster_of(n2).summary()["nodes"]}  # type: ignore
        assert nodes["n1"]["lessons"] == 0  # the dead worker's part no longer counts
        async with _worker(config, "n1", 1) as w1b:
            ws_rural, welcome = await _hello(w1b, config, RURAL)
            assert welcome.type == "welcome", welcome
            assert welcome.lesson is not None and welcome.lesson.state == "live"
            assert welcome.lesson.lesson_id == lesson["lesson_id"]
            assert welcome.lesson.started_ms == lesson["started_ms"]
            assert _cluster_of(w1b).resumed == [lesson["lesson_id"]]
            await asyncio.sleep(0.4)
            # Worker 0 stops cleanly: its part goes, n1 and the lesson's lease stay.
            await _cluster_of(w0).aclose()
            assert client.get(place_key) == "n1"
            fields = client.hgetall(node_key)
            assert fields and not any(k.startswith("w0.") for k in fields), fields
            await asyncio.sleep(1.0)
            nodes = {n["node_id"]: n for n in _cluster_of(n2).summary()["nodes"]}  # type: ignore
            assert nodes["n1"]["lesson_ids"] == [lesson["lesson_id"]]
            # The last worker stops: n1 leaves the registry and releases the lease.
            await _cluster_of(w1b).aclose()
            assert client.exists(node_key) == 0
            assert client.get(place_key) is None
            await ws_rural.close()
        await _cluster_of(w1).redis.aclose()
    client.close()


def test_cli_refuses_another_worker_count_than_the_clusters(tmp_path: Path) -> None:
    """Recorders follow mixer.workers endpoints of every node: one node started with
    another --workers would publish where no recorder listens; refused in words."""
    county = County(tmp_path).without_services()
    county.mixer["workers"] = 2
    county.mixer["cluster"] = {"redis_url": "redis://127.0.0.1:1/0", "nodes": [
        {"id": "n1", "url": f"http://127.0.0.1:{free_port()}"}]}
    path = county.write()
    done = subprocess.run([sys.executable, "-m", "syncclass", "mixer", "--config", str(path),
                           "--node-id", "n1", "--workers", "3"], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "--workers 3: every node of mixer.cluster runs mixer.workers (2)" in done.stderr


async def test_a_logout_holds_on_every_node(tmp_path: Path, redis_server: RedisServer) -> None:
    """Nodes share the dashboard's session secret, so one login is valid on all: a logout
    on n1 must be refused by n2 too (each node has its own data folder; Redis carries it)."""
    ports = {"n1": free_port(), "n2": free_port()}
    configs = {}
    for node in ports:
        county = County(tmp_path / node).without_services()
        county.data["ops"]["session_secret"] = "s" * 32
        county.mixer["data_dir"] = str(tmp_path / node / "mixer-data")
        county.mixer["cluster"] = {
            "redis_url": redis_server.url, "heartbeat_s": 0.2, "lease_ttl_s": 0.6,
            "nodes": [{"id": n, "url": f"http://127.0.0.1:{p}"} for n, p in ports.items()]}
        configs[node] = county.config()

    async def snapshot_status(client: TestClient[Any, Any], value: str) -> int:
        resp = await client.get("/dashboard/api/snapshot",
                                headers={"Cookie": f"syncclass_ops={value}"})
        return resp.status

    async with _node(configs["n1"], "n1", ports["n1"]) as n1, \
            _node(configs["n2"], "n2", ports["n2"]) as n2:
        resp = await n1.post("/dashboard/login", allow_redirects=False,
                             data={"user": "ops", "password": "syncclass-demo"})
        assert resp.status == 303, await resp.text()
        value = resp.cookies["syncclass_ops"].value
        assert await snapshot_status(n2, value) == 200  # one login, valid on both
        resp = await n1.post("/dashboard/logout", allow_redirects=False,
                             headers={"Cookie": f"syncclass_ops={value}"})
        assert resp.status == 303
        assert await snapshot_status(n1, value) == 401
        deadline = time.monotonic() + 3.0  # n1's heartbeat writes it, n2's reads it
        while await snapshot_status(n2, value) != 401:
            assert time.monotonic() < deadline, "n2 still accepts the logged-out session"
            await asyncio.sleep(0.05)
        took = 3.0 - (deadline - time.monotonic())
        r = redis.Redis.from_url(redis_server.url, decode_responses=True)
        stored = r.zrange("syncclass:sessions:revoked", 0, -1)
        assert len(stored) == 1 and value not in stored[0]  # the digest, not the cookie
        print(f"\nlogout reached n2 in {took:.2f} s")
