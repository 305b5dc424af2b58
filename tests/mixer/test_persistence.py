"""Live lessons persist in mixer.data_dir/lessons.json and a restarted mixer resumes them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from aiohttp.test_utils import TestClient, TestServer

from mixer.app import create_app
from syncclass.config import CountyConfig, parse_config
from syncclass.lesson import LessonRegistry, load_lessons, save_lessons

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000_000


def _config(tmp: Path) -> CountyConfig:
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["mixer"]["data_dir"] = str(tmp)
    data["analytics"] = {"enabled": False}
    data["recorder"] = {"enabled": False}
    return parse_config(data)


def test_round_trip_and_atomic_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    reg = LessonRegistry(config, lambda: T0)
    lesson = reg.start("main-3-1")
    path = tmp_path / "lessons.json"
    save_lessons(path, reg.live_lessons())
    assert [p.name for p in tmp_path.iterdir()] == ["lessons.json"]  # no temp file left
    loaded = load_lessons(path, config, now_ms=T0 + 60_000)
    assert [x.info() for x in loaded] == [lesson.info()]
    reg2 = LessonRegistry(config, lambda: T0 + 60_000)
    reg2.restore(loaded[0])
    assert reg2.lesson_of("hetou-3") is not None
    reg2.end("main-3-1")
    nxt = reg2.start("main-3-1")
    assert nxt.lesson_id != lesson.lesson_id  # ids are never reused after a restore


def test_old_and_unknown_lessons_not_resumed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    reg = LessonRegistry(config, lambda: T0)
    reg.start("main-3-1")
    path = tmp_path / "lessons.json"
    save_lessons(path, reg.live_lessons())
    assert load_lessons(path, config, now_ms=T0 + 7 * 3600 * 1000) == []
    doc = json.loads(path.read_text())
    doc["lessons"][0]["pairing_id"] = "gone"
    path.write_text(json.dumps(doc))
    assert load_lessons(path, config, now_ms=T0) == []


def test_corrupt_file_kept_aside(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = tmp_path / "lessons.json"
    for bad in ["{not json", '{"version": 1, "lessons": [{"x": 1}]}', "[]", '{"version": 9}']:
        path.write_text(bad)
        assert load_lessons(path, config) == []
        assert not path.exists()
        assert (tmp_path / "lessons.json.corrupt").read_text() == bad
    assert load_lessons(tmp_path / "missing.json", config) == []


async def test_restarted_app_resumes_same_lesson(tmp_path: Path) -> None:
    config = _config(tmp_path)
    token = config.classroom("main-3-1").token
    auth = {"Authorization": f"Bearer {token}"}  # the read APIs need a credential
    async with TestClient(TestServer(create_app(config, resume_lessons=True))) as client:
        resp = await client.post("/api/lessons/start", json={"classroom_id": "main-3-1"},
                                 headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200
        lesson_id = (await resp.json())["lesson_id"]
    # The first app is gone (as if the process died); a new one resumes the lesson.
    async with TestClient(TestServer(create_app(config, resume_lessons=True))) as client:
        body = await (await client.get("/api/lessons", headers=auth)).json()
        assert [(x["lesson_id"], x["state"]) for x in body["lessons"]] == [(lesson_id, "live")]
        stats = await (await client.get("/api/stats", headers=auth)).json()
        assert lesson_id in stats["media"]  # its media pipeline runs again
        async with client.ws_connect("/ws") as ws:
            await ws.send_json({"type": "hello", "classroom_id": "hetou-3",
                                "token": config.classroom("hetou-3").token})
            welcome = await ws.receive_json(timeout=5)
            assert welcome["lesson"]["lesson_id"] == lesson_id
        resp = await client.post("/api/lessons/end", json={"classroom_id": "main-3-1"},
                                 headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200
    assert json.loads((tmp_path / "lessons.json").read_text())["lessons"] == []
    # Without resume (in-process tools, tests) nothing is restored.
    async with TestClient(TestServer(create_app(config))) as client:
        assert (await (await client.get("/api/lessons", headers=auth)).json())["lessons"] == []
