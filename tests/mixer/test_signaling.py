"""The mixer's signaling and lesson API, in process (no media)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from mixer.app import create_app
from mixer.core import MIXER_KEY
from syncclass.config import load_config
from tests.core.test_config import SAMPLE

CONFIG = load_config(SAMPLE)
TOKENS = {c.id: c.token for c in CONFIG.classrooms}


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(CONFIG)
    async with TestClient(TestServer(app)) as c:
        yield c


async def hello(ws: ClientWebSocketResponse, cid: str) -> dict[str, Any]:
    await ws.send_json({"type": "hello", "classroom_id": cid, "token": TOKENS[cid]})
    return dict(await ws.receive_json(timeout=5))


async def test_hello_welcome_and_lesson_broadcast(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as main, client.ws_connect("/ws") as rural:
        w = await hello(main, "main-3-1")
        assert w["type"] == "welcome" and w["role"] == "main" and w["lesson"] is None
        w = await hello(rural, "hetou-3")
        assert w["role"] == "receiving" and w["classroom_number"] == 1
        await main.send_json({"type": "start_lesson"})
        for ws in (main, rural):
            msg = await ws.receive_json(timeout=5)
            assert msg["type"] == "lesson_state" and msg["lesson"]["state"] == "live"
            assert msg["lesson"]["subject"] == "数学"
        # A receiving classroom may not end the lesson.
        await rural.send_json({"type": "end_lesson"})
        err = await rural.receive_json(timeout=5)
        assert err["code"] == "not_allowed" and err["ref"] == "end_lesson"
        await main.send_json({"type": "end_lesson"})
        for ws in (main, rural):
            msg = await ws.receive_json(timeout=5)
            assert msg["lesson"]["state"] == "ended"
    names = [e.name for e in client.app[MIXER_KEY].events.history]
    assert names.count("lesson_started") == 1 and names.count("lesson_ended") == 1
    assert names.count("classroom_connected") == 2


async def test_second_start_is_refused(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as main:
        await hello(main, "main-3-1")
        await main.send_json({"type": "start_lesson"})
        assert (await main.receive_json(timeout=5))["type"] == "lesson_state"
        await main.send_json({"type": "start_lesson"})
        err = await main.receive_json(timeout=5)
        assert err["type"] == "error" and 'state "live"' in err["message"]


async def test_bad_sdp_gets_error_and_connection_lives(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as main:
        await hello(main, "main-3-1")
        await main.send_json({"type": "offer", "sdp": "v=0\r\nnot really sdp\r\n"})
        err = await main.receive_json(timeout=5)
        assert err["code"] == "no_lesson", err
        await main.send_json({"type": "start_lesson"})
        await main.receive_json(timeout=5)
        await main.send_json({"type": "offer", "sdp": "v=0\r\nnot really sdp\r\n"})
        err = await main.receive_json(timeout=10)
        assert err["type"] == "error" and err["code"] == "bad_sdp", err
        broken = "v=0\r\nm=video notaport UDP/TLS/RTP/SAVPF 96\r\n"
        await main.send_json({"type": "offer", "sdp": broken})
        err = await main.receive_json(timeout=10)
        assert err["type"] == "error" and err["code"] == "bad_sdp", err
        await main.send_json({"type": "ping", "id": 3})
        assert (await main.receive_json(timeout=5))["type"] == "pong"


async def test_wrong_token_closes(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "hello", "classroom_id": "main-3-1",
                            "token": TOKENS["hetou-3"]})  # another classroom's credential
        err = await ws.receive_json(timeout=5)
        assert err["code"] == "auth_failed"
        assert (await ws.receive(timeout=5)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)


async def test_reconnect_replaces_previous_connection(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as first:
        await hello(first, "hetou-3")
        async with client.ws_connect("/ws") as second:
            await hello(second, "hetou-3")
            assert (await first.receive(timeout=5)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
            await second.send_json({"type": "ping", "id": 1})
            assert (await second.receive_json(timeout=5))["type"] == "pong"


async def test_http_lesson_api(client: TestClient[Any, Any]) -> None:
    r = await client.post("/api/lessons/start", json={"classroom_id": "main-3-1"})
    assert r.status == 401
    r = await client.post("/api/lessons/start", json={"classroom_id": "main-3-1"},
                          headers={"Authorization": "Bearer wrong-wrong-wrong"})
    assert r.status == 401 and (await r.json())["code"] == "auth_failed"
    r = await client.post("/api/lessons/start", json={"classroom_id": "hetou-3"},
                          headers={"Authorization": f"Bearer {TOKENS['hetou-3']}"})
    assert r.status == 403 and (await r.json())["code"] == "not_allowed"
    r = await client.post("/api/lessons/start", data=b"{oops",
                          headers={"Authorization": f"Bearer {TOKENS['main-3-1']}"})
    assert r.status == 400
    auth = {"Authorization": f"Bearer {TOKENS['main-3-1']}"}
    r = await client.post("/api/lessons/start", json={"classroom_id": "main-3-1"}, headers=auth)
    assert r.status == 200 and (await r.json())["state"] == "live"
    r = await client.post("/api/lessons/start", json={"classroom_id": "main-3-1"}, headers=auth)
    assert r.status == 409
    r = await client.post("/api/lessons/end", json={"classroom_id": "main-3-1"}, headers=auth)
    assert r.status == 200 and (await r.json())["state"] == "ended"
