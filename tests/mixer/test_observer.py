"""Observers (教研员) and comments, in process: auth, pairing rules, receive-only media,
comment stamping, storage, events and the comments API. The browser side is in
tests/browser/test_browser_classroom.py.

The receive-only test answers with a throw-away offer, so the mixer's peer is still
checking ICE (against a closed port) when the observer disconnects: this caught, in ~1 run
of 10, a cancellation swallowed by Python 3.11's asyncio.wait_for in the observer's layout
sender (see tests/mixer/test_slowloris.py), which kept the observer subscribed for ~60 s."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from mixer.app import create_app
from mixer.comments import CommentStore
from mixer.core import MIXER_KEY
from mixer.observer import OBSERVERS_KEY
from syncclass.config import parse_config
from syncclass.errors import ConfigError
from syncclass.protocol import MAX_COMMENT_CHARS, CommentRecord
from syncclass.rtc import new_peer_connection, use_host_addresses
from tests.core.test_config import SAMPLE

OBSERVER, OBS_TOKEN = "jiaoyan-li", "demo-observer-li-4b7e19c2d8"
OTHER_MAIN, OTHER_TOKEN = "other-main", "other-main-token-0123456789"


def county(tmp: Path) -> dict[str, Any]:
    data = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    data["mixer"]["data_dir"] = str(tmp / "data")
    # A second pairing the observer may not watch.
    data["classrooms"].append({"id": OTHER_MAIN, "school": "shiyan-primary", "name": "其他",
                               "label": "Other", "role": "main", "token": OTHER_TOKEN})
    data["pairings"].append({"id": "other-pair", "main": OTHER_MAIN, "receiving": ["hetou-3"]})
    return data


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = parse_config(county(tmp_path))
    use_host_addresses(config.mixer.ice_host_addresses)
    app = create_app(config)
    async with TestClient(TestServer(app)) as c:
        yield c
    use_host_addresses(None)


def token_of(client: TestClient[Any, Any], cid: str) -> str:
    return str(client.app[MIXER_KEY].config.classroom(cid).token)


async def observe(ws: ClientWebSocketResponse, **extra: Any) -> dict[str, Any]:
    await ws.send_json({"type": "observer_hello", "observer_id": OBSERVER, "token": OBS_TOKEN,
                        **extra})
    return dict(await ws.receive_json(timeout=5))


async def start_lesson(client: TestClient[Any, Any]) -> dict[str, Any]:
    r = await client.post("/api/lessons/start", json={"classroom_id": "main-3-1"},
                          headers={"Authorization": f"Bearer {token_of(client, 'main-3-1')}"})
    assert r.status == 200
    return dict(await r.json())


async def test_observer_credentials_and_pairings(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "observer_hello", "observer_id": OBSERVER,
                            "token": token_of(client, "main-3-1")})  # a classroom's token
        err = await ws.receive_json(timeout=5)
        assert err["code"] == "auth_failed"
        assert (await ws.receive(timeout=5)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    async with client.ws_connect("/ws") as ws:
        err = await observe(ws, pairing_id="other-pair")
        assert err["type"] == "error" and err["code"] == "not_paired", err
        welcome = await observe(ws)
        assert welcome["type"] == "observer_welcome", welcome
        assert welcome["pairing_id"] == "shiyan-rural-math" and welcome["lesson"] is None
        assert welcome["view"] == "students_view"
        # Observers only watch and comment: no lesson control, no second hello.
        for msg, code in (({"type": "start_lesson"}, "not_allowed"),
                          ({"type": "end_lesson"}, "not_allowed"),
                          ({"type": "observer_hello", "observer_id": OBSERVER,
                            "token": OBS_TOKEN}, "already_authenticated")):
            await ws.send_json(msg)
            err = await ws.receive_json(timeout=5)
            assert err["code"] == code and err["ref"] == msg["type"], err
    # A classroom credential never opens an observer session and vice versa.
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "hello", "classroom_id": OBSERVER, "token": OBS_TOKEN})
        assert (await ws.receive_json(timeout=5))["code"] == "auth_failed"


async def test_comment_is_stamped_stored_emitted_and_served(
    client: TestClient[Any, Any], tmp_path: Path
) -> None:
    mixer = client.app[MIXER_KEY]
    async with client.ws_connect("/ws") as ws:
        await observe(ws)
        await ws.send_json({"type": "comment", "text": "too early"})
        err = await ws.receive_json(timeout=5)
        assert err["code"] == "no_lesson", err
        lesson = await start_lesson(client)
        state = await ws.receive_json(timeout=5)
        assert state["type"] == "lesson_state" and state["lesson"]["state"] == "live"
        for bad in ("   ", "x" * (MAX_COMMENT_CHARS + 1)):
            await ws.send_json({"type": "comment", "text": bad})
            assert (await ws.receive_json(timeout=5))["code"] == "bad_message"
        await ws.send_json({"type": "comment", "text": "学生讨论热烈"})
        msg = await ws.receive_json(timeout=5)
        while msg["type"] == "layout":
            msg = await ws.receive_json(timeout=5)
        added = CommentRecord.model_validate(msg)
        assert added.seq == 1 and added.text == "学生讨论热烈" and added.author == "县教研室 李老师"
        assert added.lesson_id == lesson["lesson_id"]
        assert added.lesson_ms == added.epoch_ms - lesson["started_ms"] >= 0
        await ws.send_json({"type": "comment", "text": "second"})
        second = await ws.receive_json(timeout=5)
        assert second["seq"] == 2 and second["lesson_ms"] >= added.lesson_ms

    path = tmp_path / "data" / "lessons" / lesson["lesson_id"] / "comments.jsonl"
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert [x["text"] for x in lines] == ["学生讨论热烈", "second"]
    events = [e for e in mixer.events.history if e.name == "comment_added"]
    assert len(events) == 2 and events[0].lesson_id == lesson["lesson_id"]
    assert events[0].data["comment"]["text"] == "学生讨论热烈"
    assert events[0].data["observer_id"] == OBSERVER

    url = f"/api/lessons/{lesson['lesson_id']}/comments"
    for token, status in ((OBS_TOKEN, 200), (token_of(client, "hetou-3"), 200),
                          (token_of(client, "main-3-1"), 200), (OTHER_TOKEN, 403),
                          ("nobody-nobody-nobody", 401)):
        r = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert r.status == status, (token, status, await r.text())
    r = await client.get(url, headers={"Authorization": f"Bearer {OBS_TOKEN}"})
    body = await r.json()
    assert [c["seq"] for c in body["comments"]] == [1, 2]
    assert body["started_ms"] == lesson["started_ms"]
    assert (await client.get(url)).status == 401
    auth = {"Authorization": f"Bearer {OBS_TOKEN}"}
    assert (await client.get("/api/lessons/nope-1/comments", headers=auth)).status == 404
    assert (await client.get("/api/lessons/..%2Fetc/comments", headers=auth)).status in (400, 404)

    # After the lesson ends the comments stay readable, and comments are refused.
    r = await client.post("/api/lessons/end", json={"classroom_id": "main-3-1"},
                          headers={"Authorization": f"Bearer {token_of(client, 'main-3-1')}"})
    assert r.status == 200
    assert (await client.get(url, headers=auth)).status == 200


async def _offer(directions: dict[str, str]) -> str:
    """An aiortc offer with these transceivers (its peer is closed: only the SDP is used)."""
    pc = new_peer_connection()
    try:
        for kind, direction in directions.items():
            pc.addTransceiver(kind.split(":")[0], direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def _sections(sdp: str) -> list[str]:
    return sdp.split("\r\nm=")[1:]


def _first_codec(section: str) -> str:
    """The codec of the first payload type on an m-line (the one that will be used)."""
    first_pt = section.split("\r\n")[0].split()[3]
    for line in section.split("\r\n"):
        if line.startswith(f"a=rtpmap:{first_pt} "):
            return line.split()[1]
    raise AssertionError(f"no rtpmap for payload type {first_pt}")


async def test_observer_media_is_receive_only(client: TestClient[Any, Any]) -> None:
    await start_lesson(client)
    media = next(iter(client.app[MIXER_KEY].media.values()))
    others = list(media.full_mix_listeners)  # e.g. the recorder's
    async with client.ws_connect("/ws") as ws:
        welcome = await observe(ws)
        assert welcome["lesson"]["state"] == "live"
        sdp = await _offer({"video": "sendrecv", "audio": "recvonly"})
        await ws.send_json({"type": "offer", "sdp": sdp})
        err = await ws.receive_json(timeout=10)
        assert err["code"] == "not_allowed" and "sends no media" in err["message"], err
        sdp = await _offer({"video": "recvonly", "audio": "recvonly"})
        await ws.send_json({"type": "offer", "sdp": sdp})
        msg = await ws.receive_json(timeout=10)
        while msg["type"] == "layout":
            msg = await ws.receive_json(timeout=10)
        assert msg["type"] == "answer", msg
        video, audio = _sections(msg["sdp"])
        assert "a=sendonly" in video and "a=sendonly" in audio
        assert "H264/90000" in video and "VP8" not in video
        assert "observer:jiaoyan-li" in media.views["students_view"].subscribers
        assert "observer:jiaoyan-li" not in media.views["teacher_view"].subscribers
        assert len(media.full_mix_listeners) == len(others) + 1
        observer_pc = client.app[OBSERVERS_KEY].sessions[OBSERVER].pc
    # The observer disconnected: its subscription and mix listener are gone.
    for _ in range(50):
        if observer_pc is not None and observer_pc.connectionState == "closed":
            break
        await asyncio.sleep(0.1)
    assert "observer:jiaoyan-li" not in media.views["students_view"].subscribers
    assert media.full_mix_listeners == others


async def test_browser_offer_keeps_camera_codec_view_goes_h264(
    client: TestClient[Any, Any],
) -> None:
    """A browser offers its camera sendonly (VP8 first) and the view recvonly: the camera
    keeps VP8, the view is answered with H.264 only (we send pre-encoded H.264)."""
    await start_lesson(client)
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "hello", "classroom_id": "hetou-3",
                            "token": token_of(client, "hetou-3"), "client": "browser"})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        sdp = await _offer({"video:cam": "sendonly", "video:view": "recvonly"})
        # aiortc's offer carries one video transceiver per addTransceiver call.
        assert len([s for s in _sections(sdp) if s.startswith("video")]) == 2
        await ws.send_json({"type": "offer", "sdp": sdp})
        msg = await ws.receive_json(timeout=10)
        while msg["type"] == "layout":
            msg = await ws.receive_json(timeout=10)
        assert msg["type"] == "answer", msg
        cam, view = _sections(msg["sdp"])
        assert "a=recvonly" in cam and _first_codec(cam) == "VP8/90000"
        assert "a=sendonly" in view and "H264/90000" in view and "VP8" not in view
        mixer = client.app[MIXER_KEY]
        media = next(iter(mixer.media.values()))
        assert "hetou-3" in media.views["students_view"].subscribers
        mixer_pc = mixer.sessions["hetou-3"].pc
    # Let the mixer finish closing the peer before the app shuts down.
    for _ in range(50):
        if mixer_pc.connectionState == "closed":
            break
        await asyncio.sleep(0.1)
    assert mixer_pc.connectionState == "closed"


def test_comment_store_skips_torn_line(tmp_path: Path) -> None:
    store = CommentStore(tmp_path)
    path = store.path("lesson-1")
    path.parent.mkdir(parents=True)
    record = CommentRecord(lesson_id="lesson-1", pairing_id="p", seq=1, observer_id="o",
                           author="A", text="ok", lesson_ms=5, epoch_ms=10)
    path.write_text(record.model_dump_json() + "\n" + '{"lesson_id": "lesson-1", "te',
                    encoding="utf-8")
    assert store.read("lesson-1") == [record]
    assert store.read("no-such-lesson") is None
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            store.path(bad)


async def test_comment_store_numbers_after_restart(tmp_path: Path) -> None:
    fields = {"lesson_id": "l-1", "pairing_id": "p", "observer_id": "o", "author": "A",
              "text": "t", "lesson_ms": 1, "epoch_ms": 2}
    assert (await CommentStore(tmp_path).add(fields)).seq == 1
    # A new store (a restarted mixer) continues the numbering from the file.
    assert (await CommentStore(tmp_path).add(fields)).seq == 2


def test_observer_config_validation(tmp_path: Path) -> None:
    data = county(tmp_path)
    bad = copy.deepcopy(data)
    bad["observers"][0]["pairings"] = ["no-such-pairing"]
    with pytest.raises(ConfigError, match=r"observers\[0\]\.pairings\[0\]: unknown pairing"):
        parse_config(bad)
    bad = copy.deepcopy(data)
    bad["observers"][0]["token"] = data["classrooms"][0]["token"]
    with pytest.raises(ConfigError, match=r"observers\[0\]\.token: duplicate token \(hidden\)"):
        parse_config(bad)
    bad = copy.deepcopy(data)
    bad["observers"][0]["pairings"] = []
    with pytest.raises(ConfigError, match="pairings"):
        parse_config(bad)
