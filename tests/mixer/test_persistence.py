"""Live lessons persist in mixer.data_dir/lessons.json and a restarted mixer resumes them."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mixer.app import create_app
from syncclass.config import CountyConfig
from syncclass.lesson import LessonRegistry, lessons_to_json, load_lessons, save_lessons
from tests.county import County

T0 = 1_800_000_000_000


@pytest.fixture
def config(county: County, tmp_path: Path) -> CountyConfig:
    return _config(tmp_path)


def _config(data_dir: Path) -> CountyConfig:
    county = County(data_dir)
    county.mixer["data_dir"] = str(data_dir)
    return county.without_services().config()


def test_round_trip_and_atomic_file(config: CountyConfig, tmp_path: Path) -> None:
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


def test_old_and_unknown_lessons_not_resumed(config: CountyConfig, tmp_path: Path) -> None:
    reg = LessonRegistry(config, lambda: T0)
    reg.start("main-3-1")
    path = tmp_path / "lessons.json"
    save_lessons(path, reg.live_lessons())
    assert load_lessons(path, config, now_ms=T0 + 7 * 3600 * 1000) == []
    doc = json.loads(path.read_text())
    doc["lessons"][0]["pairing_id"] = "gone"
    path.write_text(json.dumps(doc))
    assert load_lessons(path, config, now_ms=T0) == []


def test_corrupt_file_kept_aside(config: CountyConfig, tmp_path: Path) -> None:
    path = tmp_path / "lessons.json"
    for bad in ["{not json", '{"version": 1, "lessons": [{"x": 1}]}', "[]", '{"version": 9}']:
        path.write_text(bad)
        assert load_lessons(path, config) == []
        assert not path.exists()
        assert (tmp_path / "lessons.json.corrupt").read_text() == bad
    assert load_lessons(tmp_path / "missing.json", config) == []


async def test_restarted_app_resumes_same_lesson(config: CountyConfig, tmp_path: Path) -> None:
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


def _good_doc(config: CountyConfig) -> dict[str, Any]:
    reg = LessonRegistry(config, lambda: T0)
    reg.start("main-3-1")
    return dict(json.loads(lessons_to_json(reg.live_lessons())))


def _write_bad(path: Path, case: str, config: CountyConfig) -> None:
    """A ``lessons.json`` broken in one way (issue 18, item 7)."""
    doc = _good_doc(config)
    if case == "invalid_utf8":
        path.write_bytes(json.dumps(doc).encode()[:-3] + b'"\xff\xfe"}')
    elif case == "wrong_type":
        doc["lessons"][0]["subject"] = {"name": ["数学"]}
        path.write_text(json.dumps(doc))
    elif case == "receiving_not_list":
        doc["lessons"][0]["receiving"] = {"a": 1}
        path.write_text(json.dumps(doc))
    elif case == "deep_nesting":
        path.write_text('{"version": 1, "lessons": ' + "[" * 200_000 + "]" * 200_000 + "}")
    elif case == "directory":
        path.mkdir()
        (path / "inside").write_text("x")
    elif case == "two_live_of_one_pairing":
        twin = dict(doc["lessons"][0], lesson_id=doc["lessons"][0]["lesson_id"] + "0")
        doc["lessons"].append(twin)
        path.write_text(json.dumps(doc))
    elif case == "lesson_id_is_a_path":
        doc["lessons"][0]["lesson_id"] = "../../../outside"
        path.write_text(json.dumps(doc))
    else:
        raise AssertionError(case)


BAD_CASES = ["invalid_utf8", "wrong_type", "receiving_not_list", "deep_nesting", "directory",
             "two_live_of_one_pairing", "lesson_id_is_a_path"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_lessons_file_is_set_aside(tmp_path: Path, case: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    config = _config(tmp_path)
    path = tmp_path / "lessons.json"
    _write_bad(path, case, config)
    caplog.set_level(logging.ERROR, logger="syncclass.lesson")
    assert load_lessons(path, config, now_ms=T0 + 1000) == []
    assert not path.exists()
    assert (tmp_path / "lessons.json.corrupt").exists()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "kept as" in errors[0].getMessage(), caplog.text
    # The next save works (nothing is left in the file's place).
    save_lessons(path, [])
    assert json.loads(path.read_text())["lessons"] == []


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_mixer_starts_with_a_bad_lessons_file(tmp_path: Path) -> None:
    """With each bad file the app starts, resumes nothing, the lesson starts again, and
    no report or folder appears outside data_dir."""
    for case in ["lesson_id_is_a_path", "two_live_of_one_pairing", "directory"]:
        data = tmp_path / case / "data"
        data.mkdir(parents=True)
        config = _config(data)
        _write_bad(data / "lessons.json", case, config)
        if (data / "lessons.json").is_file():  # young enough to be resumed
            doc = json.loads((data / "lessons.json").read_text())
            for item in doc["lessons"]:
                item["started_ms"] = int(time.time() * 1000)
            (data / "lessons.json").write_text(json.dumps(doc))
        auth = {"Authorization": f"Bearer {config.classroom('main-3-1').token}"}
        async with TestClient(TestServer(create_app(config, resume_lessons=True))) as client:
            body = await (await client.get("/api/lessons", headers=auth)).json()
            assert body["lessons"] == [], case
            for action in ("start", "end"):
                resp = await client.post(f"/api/lessons/{action}",
                                         json={"classroom_id": "main-3-1"}, headers=auth)
                assert resp.status == 200, (case, action)
        assert (data / "lessons.json.corrupt").exists(), case
    assert _names(tmp_path) == ["directory", "lesson_id_is_a_path", "two_live_of_one_pairing"]
    assert not (tmp_path.parent / "outside").exists()
