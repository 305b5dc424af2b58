"""Several mixer nodes on a real Redis (scripts/redisserver.sh): registry, placement,
redirect, fail-over of a live lesson, Redis down and back. Two nodes run in this process
(aiohttp test servers on loopback; no media)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer

from mixer.app import create_app
from mixer.cluster import CLUSTER_KEY, Cluster
from syncclass.config import CountyConfig
from syncclass.demo import free_port
from syncclass.errors import ConfigError
from syncclass.placement import NodeLoad, pick_node, recorder_endpoints
from syncclass.protocol import Redirect, parse_server_message
from syncclass.testing.redis_support import RedisServer
from tests.county import County

MAIN, RURAL, PAIRING = "main-3-1", "hetou-3", "shiyan-rural-math"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(free_port()) as server:
        yield server


def _cluster_config(tmp: Path, redis_url: str, ports: dict[str, int], **extra: Any
                    ) -> CountyConfig:
    county = County(tmp).without_services()
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
    county.mixer["workers"] = 2
    county.mixer["cluster"] = {"redis_url": "redis://127.0.0.1:1/0", "nodes": [
        {"id": n, "url": f"http://127.0.0.1:{p}"} for n, p in ports.items()]}
    with pytest.raises(ConfigError, match=r"set mixer\.workers: 0"):
        county.config()
    cfg = _cluster_config(tmp_path, "redis://:pw@127.0.0.1:1/0", ports)
    assert "pw" not in repr(cfg.mixer.cluster)
    assert cfg.mixer.cluster is not None and cfg.mixer.cluster.vouches_for("http://127.0.0.1:2/")
    assert not cfg.mixer.cluster.vouches_for("http://evil.example:2")
    assert recorder_endpoints(cfg) == [cfg.recorder.endpoint]


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
    config = _cluster_config(tmp_path, redis_server.url, {"n1": port})
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
            # The lesson ends: its state leaves Redis (no survivor would resume it).
            resp = await n1.post("/api/lessons/end", json={"classroom_id": MAIN}, headers=token)
            assert resp.status == 200
            await asyncio.sleep(0.5)
            assert client.get(f"syncclass:lesson:{PAIRING}") is None
        finally:
            client.close()
        await ws_main.close()
        await ws_rural.close()
