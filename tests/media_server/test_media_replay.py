"""Replay from the media server in-process: who may replay (pairing, publishing by ops,
share links), the analytics on the video's clock, comments while replaying, MP4 ranges and
download, the log of views, retention; and the same from an S3 archive (moto)."""

from __future__ import annotations

import asyncio
import json
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import yaml
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from media_server.replay import REPLAY_KEY
from media_server.service import create_app
from mixer.comments import CommentStore
from recorder.archive import S3Archive, Spool
from syncclass.auth import hash_password
from syncclass.config import CountyConfig
from syncclass.demo import free_port
from syncclass.sharelinks import sign_share
from tests.recorder.test_recorder_s3 import S3Server, s3_config

ROOT = Path(__file__).resolve().parent.parent.parent
LESSON = "l20261205-shiyan-rural-math-0830"
START_MS = 1_780_000_000_000
RECORDED_FROM_MS = START_MS + 1500  # the video's first frame, 1.5 s into the lesson
SECRET = "r" * 40
PASSWORD = "replay-test-password"


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 6 s H.264 MP4 (small picture, 5 fps)."""
    path = tmp_path_factory.mktemp("mp4") / "lesson.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=5)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 5)
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    return path


def _config(retention_days: float | None = None) -> CountyConfig:
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["classrooms"] += [
        {"id": "main-4-1", "school": "shiyan-primary", "name": "四(1)班", "label": "Main 4-1",
         "role": "main", "token": "test-main-4-1-token-0123"}]
    data["pairings"].append({"id": "other-pairing", "main": "main-4-1",
                             "receiving": ["hetou-3"]})
    data.setdefault("ops", {})["users"] = [
        {"name": "ops", "password_hash": hash_password(PASSWORD, log2n=10)}]
    data["media_server"] = {"share_secret": SECRET, "retention_days": retention_days}
    return CountyConfig.model_validate(data)


def _metadata() -> dict[str, Any]:
    return {"lesson_id": LESSON, "pairing_id": "shiyan-rural-math", "subject": "数学",
            "grade": "三年级", "teacher": "王老师", "start": "2026-05-28T08:30:00.000+08:00",
            "start_ms": START_MS, "end_ms": START_MS + 8000, "duration_s": 8.0,
            "recorded_from_ms": RECORDED_FROM_MS, "video_duration_s": 6.0,
            "schools": [{"id": "shiyan-primary", "name": "实验小学", "classrooms": []}],
            "classrooms": [], "gaps": []}


def _report() -> dict[str, Any]:
    return {"lesson": {"lesson_id": LESSON}, "classrooms": [
        {"classroom_id": "main-3-1", "label": "Shiyan 3-1", "role": "main",
         "speech": {"segments": [[START_MS + 2000, START_MS + 4000]], "talk_s": 2.0},
         "present_intervals": [[START_MS, START_MS + 8000]],
         "hand_raises": {"count": 0, "ts_ms": []}, "attendance_ratio": 1.0},
        {"classroom_id": "hetou-3", "label": "Hetou G3", "role": "receiving",
         "speech": {"segments": [[START_MS + 5000, START_MS + 5500]], "talk_s": 0.5},
         "present_intervals": [[START_MS + 500, START_MS + 8000]],
         "hand_raises": {"count": 1, "ts_ms": [START_MS + 4500]}, "attendance_ratio": 0.94}],
        "st": {"interval_s": 2.0, "first_sample_ms": START_MS, "codes": "TTST",
               "curve": [[0, 0], [1, 0], [2, 0], [2, 1], [3, 1]], "rt": 0.75, "ch": 0.67,
               "lesson_type": "讲授型"}}


def _archive(root: Path, mp4: Path) -> Path:
    d = root / LESSON
    d.mkdir(parents=True)
    (d / "lesson.mp4").write_bytes(mp4.read_bytes())
    (d / "metadata.json").write_text(json.dumps(_metadata(), ensure_ascii=False))
    (d / "report.json").write_text(json.dumps(_report(), ensure_ascii=False))
    return d


async def _live_comment(mixer_data: Path, lesson_ms: int) -> None:
    """A comment an observer wrote while the lesson was live (the mixer's own store)."""
    await CommentStore(mixer_data).add({
        "lesson_id": LESSON, "pairing_id": "shiyan-rural-math", "observer_id": "jiaoyan-li",
        "author": "县教研室 李老师", "text": "提问设计好", "lesson_ms": lesson_ms,
        "epoch_ms": START_MS + lesson_ms})


def _app(tmp: Path, config: CountyConfig) -> Any:
    return create_app(config, live_dir=tmp / "live", data_dir=tmp / "media",
                      archive_dir=tmp / "archive", mixer_data_dir=tmp / "mixer")


async def _login(client: TestClient) -> None:
    r = await client.post("/archive/login", data={"user": "ops", "password": PASSWORD},
                          allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/archive/"


async def test_private_until_published(tmp_path: Path, mp4: Path) -> None:
    config = _config()
    _archive(tmp_path / "archive", mp4)
    observer = config.observers[0].token
    other = config.classroom("main-4-1").token  # a classroom of another pairing
    async with TestClient(TestServer(_app(tmp_path, config))) as ops, \
            TestClient(TestServer(ops.server.app)) as outsider:
        base = f"/replay/{LESSON}/"
        r = await ops.get("/archive/", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/archive/login"
        r = await ops.post("/archive/login", data={"user": "ops", "password": "wrong"},
                           allow_redirects=False)
        assert r.headers["Location"] == "/archive/login?error=1"
        await _login(ops)
        page = await (await ops.get("/archive/")).text()
        assert LESSON in page and "未发布 private" in page
        # The pairing's observer replays it; a classroom of another pairing does not.
        r = await outsider.get(base + "data.json", headers={"Authorization": f"Bearer {observer}"})
        assert r.status == 200
        r = await outsider.get(base + "data.json", headers={"Authorization": f"Bearer {other}"})
        assert r.status == 403
        r = await outsider.get("/archive/", params={"token": other})
        assert LESSON not in await r.text()
        # Only ops publish (审核).
        r = await outsider.post(f"/archive/{LESSON}/publish", data={"publish": "1"})
        assert r.status == 403
        r = await ops.post(f"/archive/{LESSON}/publish", data={"publish": "1"},
                           allow_redirects=False)
        assert r.status == 303
        r = await outsider.get(base + "data.json")  # the archive cookie of main-4-1
        assert r.status == 200
        assert LESSON in await (await outsider.get("/archive/")).text()
        r = await ops.post(f"/archive/{LESSON}/publish", data={"publish": "0"})
        r = await outsider.get(base + "data.json")
        assert r.status == 403
        # Filters and search.
        for params, found in (({"subject": "数学"}, True), ({"subject": "语文"}, False),
                              ({"teacher": "王老师", "date": "2026-05-28"}, True),
                              ({"school": "实验"}, True), ({"q": "shiyan-rural"}, True),
                              ({"q": "nothing-like-it"}, False), ({"grade": "四年级"}, False)):
            text = await (await ops.get("/archive/", params=params)).text()
            assert (LESSON in text) == found, params


async def test_timeline_comments_and_views(tmp_path: Path, mp4: Path) -> None:
    config = _config()
    _archive(tmp_path / "archive", mp4)
    await _live_comment(tmp_path / "mixer", lesson_ms=4500)
    observer = config.observers[0].token
    async with TestClient(TestServer(_app(tmp_path, config))) as client:
        base = f"/replay/{LESSON}/"
        r = await client.get(base, params={"token": observer}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == base
        r = await client.get(base)
        assert r.status == 200 and "/static/replay.js" in await r.text()
        data = await (await client.get(base + "data.json")).json()
        assert data["video"]["offset_ms"] == 1500 and data["can_comment"]
        rooms = {c["id"]: c for c in data["timeline"]["classrooms"]}
        # Report times (epoch ms) on the video's clock: first frame at START + 1.5 s.
        assert rooms["main-3-1"]["speech"] == [[0.5, 2.5]]
        assert rooms["hetou-3"]["hands"] == [3.0]
        assert data["timeline"]["st"]["first_s"] == -1.5
        assert [(c["origin"], c["video_s"]) for c in data["comments"]] == [("live", 3.0)]
        # An observer comments while replaying, at the video's time.
        r = await client.post(base + "comments", json={"text": "板书清楚", "video_s": 5.0})
        assert r.status == 201
        added = await r.json()
        assert added["lesson_ms"] == 6500 and added["video_s"] == 5.0
        assert added["author"] == "县教研室 李老师"
        data = await (await client.get(base + "data.json")).json()
        assert [c["text"] for c in data["comments"]] == ["提问设计好", "板书清楚"]
        for bad in ({"text": "", "video_s": 1}, {"text": "x", "video_s": 99},
                    {"text": "x"}, {"text": "x" * 2001, "video_s": 1}):
            r = await client.post(base + "comments", json=bad)
            assert r.status == 400, bad
        receiving = config.classroom("hetou-3").token
        r = await client.post(base + "comments", json={"text": "x", "video_s": 1},
                              headers={"Authorization": f"Bearer {receiving}"})
        assert r.status == 403  # classrooms watch; observers and ops comment
        # The video: byte ranges for seeking, and the MP4 as a file.
        r = await client.get(base + "lesson.mp4", headers={"Range": "bytes=0-99"})
        assert r.status == 206 and r.headers["Content-Type"] == "video/mp4"
        assert len(await r.read()) == 100
        r = await client.get(base + "lesson.mp4", params={"download": "1"})
        assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
        assert await r.read() == await asyncio.to_thread(mp4.read_bytes)
    views = [json.loads(x) for x in (tmp_path / "media" / "views.jsonl").read_text()
             .splitlines()]
    assert [(v["who"], v["what"]) for v in views] == [
        ("observer:jiaoyan-li", "replay"), ("observer:jiaoyan-li", "download")]
    assert all(v["lesson_id"] == LESSON and v["epoch_ms"] > 0 for v in views)


async def test_share_link_replays_one_lesson(tmp_path: Path, mp4: Path) -> None:
    config = _config()
    _archive(tmp_path / "archive", mp4)
    async with TestClient(TestServer(_app(tmp_path, config))) as client:
        base = f"/replay/{LESSON}/"
        live = sign_share(SECRET.encode(), "live", LESSON, int(time.time()) + 60)
        r = await client.get(base + "data.json", params={"share": live})
        assert r.status == 401  # a live link does not open the replay
        good = sign_share(SECRET.encode(), "replay", LESSON, int(time.time()) + 60)
        r = await client.get(base, params={"share": good}, allow_redirects=False)
        assert r.status == 303
        data = await (await client.get(base + "data.json")).json()
        assert data["viewer"] == "share" and not data["can_comment"]
        r = await client.post(base + "comments", json={"text": "x", "video_s": 1})
        assert r.status == 403
        r = await client.get("/archive/", allow_redirects=False)
        assert r.status == 303  # a share link opens one lesson, not the archive


async def test_retention_deletes_old_lessons(tmp_path: Path, mp4: Path) -> None:
    # The server sweeps at start too: a lesson from May is kept for 400 days.
    config = _config(retention_days=400)
    d = _archive(tmp_path / "archive", mp4)
    live = tmp_path / "live" / LESSON
    (live / "segments").mkdir(parents=True)
    (live / "segments" / "seg_000000.ts").write_bytes(b"\x47" * 188)
    app = _app(tmp_path, config)
    async with TestClient(TestServer(app)) as client:
        rp = app[REPLAY_KEY]
        assert await rp.apply_retention(START_MS / 1000 + 399 * 86400) == []
        assert d.exists()
        assert await rp.apply_retention(START_MS / 1000 + 401 * 86400) == [LESSON]
        assert not d.exists() and not live.exists()
        assert rp.state.deleted()[LESSON]["by"] == "retention"
        await _login(client)
        r = await client.get(f"/replay/{LESSON}/data.json")
        assert r.status == 404
        assert LESSON not in await (await client.get("/archive/")).text()


async def test_replay_from_s3(tmp_path: Path, mp4: Path) -> None:
    server = S3Server(free_port(), tmp_path / "s3.log")
    await asyncio.to_thread(server.start)
    try:
        s3 = s3_config(server)
        # The recorder archives the lesson to S3 as it does after a lesson.
        d = _archive(tmp_path / "local", mp4)
        (d / "report.json").unlink()  # on S3 the report stays in the mixer's folder
        spool = Spool(tmp_path / "spool")
        job = spool.add(LESSON, [d / "lesson.mp4", d / "metadata.json"], {})
        await asyncio.to_thread(S3Archive(s3).put, job, lambda *a: None)
        rdir = tmp_path / "mixer" / "reports" / LESSON
        rdir.mkdir(parents=True)
        (rdir / "report.json").write_text(json.dumps(_report()))
        config = _config()
        config = config.model_copy(update={"recorder": config.recorder.model_copy(
            update={"archive": "s3", "s3": s3})})
        async with TestClient(TestServer(_app(tmp_path, config))) as client:
            await _login(client)
            assert LESSON in await (await client.get("/archive/")).text()
            base = f"/replay/{LESSON}/"
            data = await (await client.get(base + "data.json")).json()
            assert data["timeline"]["classrooms"][0]["speech"] == [[0.5, 2.5]]
            r = await client.get(base + "lesson.mp4", params={"download": "1"},
                                 allow_redirects=False)
            assert r.status == 302
            url = r.headers["Location"]
            assert url.startswith(server.url) and "Signature" in url
            async with ClientSession() as http, http.get(url) as got:
                assert got.status == 200
                assert await got.read() == await asyncio.to_thread(mp4.read_bytes)
                assert "attachment" in got.headers.get("Content-Disposition", "")
            r = await client.post(f"/archive/{LESSON}/delete", allow_redirects=False)
            assert r.status == 303
            r = await client.get(base + "data.json")
            assert r.status == 404
        assert "Contents" not in S3Archive(s3).client.list_objects_v2(
            Bucket=s3.bucket, Prefix=s3.prefix)
    finally:
        server.stop()
