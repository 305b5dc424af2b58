"""The media server in-process: share links and grants (expiry, tampering), who may watch a
lesson, the HLS responses' types and cache headers, and the log of views."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from media_server.access import ViewLog
from media_server.app import (
    LIVE_PLAYLIST_CACHE,
    PLAYLIST_TYPE,
    SEGMENT_CACHE,
    SEGMENT_TYPE,
)
from media_server.service import create_app
from syncclass.config import CountyConfig
from syncclass.errors import AuthError
from syncclass.sharelinks import Grants, sign_share, verify_share
from syncclass.tokens import SigningKey, issue_token

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = b"s" * 40
LESSON = "l20261205-shiyan-rural-math-0900"


# -- share links and grants (pure) -------------------------------------------------------------
def test_share_link_round_trip_and_expiry() -> None:
    value = sign_share(SECRET, "live", LESSON, 2_000_000_000)
    assert verify_share(SECRET, "live", LESSON, value, 1_999_999_999) == 2_000_000_000
    with pytest.raises(AuthError) as err:
        verify_share(SECRET, "live", LESSON, value, 2_000_000_000)
    assert err.value.code == "share_expired"


@pytest.mark.parametrize("what", ["expiry", "mac", "lesson", "scope", "secret", "shape"])
def test_tampered_share_link_is_refused(what: str) -> None:
    value = sign_share(SECRET, "live", LESSON, 2_000_000_000)
    expires, mac = value.split(".")
    lesson, scope, secret = LESSON, "live", SECRET
    if what == "expiry":  # a later expiry with the old signature
        value = f"{int(expires) + 3600}.{mac}"
    elif what == "mac":
        value = f"{expires}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
    elif what == "lesson":
        lesson = LESSON + "x"
    elif what == "scope":
        scope = "replay"
    elif what == "secret":
        secret = b"t" * 40
    else:
        value = mac
    with pytest.raises(AuthError) as err:
        verify_share(secret, scope, lesson, value, 1_000_000_000)  # type: ignore[arg-type]
    assert err.value.code == "share_invalid"
    assert mac not in err.value.message


def test_grants() -> None:
    grants = Grants(SECRET)
    value = grants.issue("live:" + LESSON, "observer:jiaoyan-li", 2000)
    got = grants.verify(value, "live:" + LESSON, 1999)
    assert got is not None and got.who == "observer:jiaoyan-li"
    assert grants.verify(value, "live:" + LESSON, 2000) is None  # expired
    assert grants.verify(value, "replay:" + LESSON, 1000) is None  # another lesson/scope
    forged = value.replace("observer:jiaoyan-li", "ops:api_token")
    assert grants.verify(forged, "live:" + LESSON, 1000) is None
    assert Grants(b"x" * 40).verify(value, "live:" + LESSON, 1000) is None


# -- the HTTP server ---------------------------------------------------------------------------
def _config(share: bool = True) -> CountyConfig:
    """The sample county plus a second pairing (main-4-1 with hetou-4), a signing key and
    (``share``) a share secret."""
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["classrooms"] += [
        {"id": "main-4-1", "school": "shiyan-primary", "name": "四(1)班", "label": "Main 4-1",
         "role": "main", "token": "test-main-4-1-token-0123"},
        {"id": "hetou-4", "school": "hetou-point", "name": "河头四年级", "label": "Hetou 4",
         "role": "receiving", "token": "test-hetou-4-token-01234"}]
    data["pairings"].append({"id": "other-pairing", "main": "main-4-1",
                             "receiving": ["hetou-4"]})
    data.setdefault("mixer", {})["token_keys"] = [{"id": "k1", "secret": "k" * 40}]
    if share:
        data["media_server"] = {"share_secret": SECRET.decode()}
    return CountyConfig.model_validate(data)


def _lesson_dir(root: Path, pairing: str = "shiyan-rural-math", ended: bool = False) -> Path:
    d = root / LESSON
    (d / "segments").mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({
        "lesson_id": LESSON, "pairing_id": pairing, "subject": "数学", "grade": "三年级",
        "teacher": "王老师"}, ensure_ascii=False))
    (d / "segments" / "seg_000000.ts").write_bytes(b"\x47" + bytes(187) * 1)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2",
             "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-MEDIA-SEQUENCE:0", "#EXTINF:2.000,",
             "segments/seg_000000.ts"] + (["#EXT-X-ENDLIST"] if ended else [])
    (d / "index.m3u8").write_text("\n".join(lines) + "\n")
    return d


async def test_live_hls_by_credential(tmp_path: Path) -> None:
    config = _config()
    _lesson_dir(tmp_path / "live")
    app = create_app(config, tmp_path / "live", tmp_path / "data")
    observer = config.observers[0].token
    pairing = config.pairing("shiyan-rural-math")
    receiving = config.classroom(pairing.receiving[0]).token
    other = next(c for c in config.classrooms
                 if c.id != pairing.main and c.id not in pairing.receiving)
    async with TestClient(TestServer(app)) as client:
        base = f"/live/{LESSON}/"
        r = await client.get(base + "index.m3u8")
        assert r.status == 401
        r = await client.get(base + "index.m3u8", headers={"Authorization": "Bearer nope" * 3})
        assert r.status == 401
        r = await client.get(base + "index.m3u8",
                             headers={"Authorization": f"Bearer {other.token}"})
        assert r.status == 403  # a classroom of another pairing
        for token in (observer, receiving):
            r = await client.get(base + "index.m3u8",
                                 headers={"Authorization": f"Bearer {token}"})
            assert r.status == 200
            assert r.headers["Content-Type"] == PLAYLIST_TYPE
            assert r.headers["Cache-Control"] == LIVE_PLAYLIST_CACHE
            assert "segments/seg_000000.ts" in await r.text()
        r = await client.get(base + "segments/seg_000000.ts",
                             headers={"Authorization": f"Bearer {observer}"})
        assert r.status == 200
        assert r.headers["Content-Type"] == SEGMENT_TYPE
        assert r.headers["Cache-Control"] == SEGMENT_CACHE
        assert (await r.read())[0] == 0x47
        r = await client.get(base + "segments/..%2Fmeta.json",
                             headers={"Authorization": f"Bearer {observer}"})
        assert r.status == 404
        # A signed classroom token of the pairing's main classroom.
        signed = issue_token(SigningKey("k1", b"k" * 40), pairing.main, int(time.time()) + 60)
        r = await client.get(base + "index.m3u8", headers={"Authorization": f"Bearer {signed}"})
        assert r.status == 200
        expired = issue_token(SigningKey("k1", b"k" * 40), pairing.main, int(time.time()) - 1)
        r = await client.get(base + "index.m3u8",
                             headers={"Authorization": f"Bearer {expired}"})
        assert r.status == 401


async def test_watch_page_swaps_credential_for_cookie(tmp_path: Path) -> None:
    config = _config()
    _lesson_dir(tmp_path / "live")
    app = create_app(config, tmp_path / "live", tmp_path / "data")
    async with TestClient(TestServer(app)) as client:
        base = f"/live/{LESSON}/"
        r = await client.get(base)
        assert r.status == 401
        r = await client.get(base, params={"token": config.observers[0].token},
                             allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == base
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and f"Path={base}" in cookie
        r = await client.get(base)  # the cookie jar carries the grant
        assert r.status == 200
        text = await r.text()
        assert "/static/vendor/hls.min.js" in text and "数学" in text
        r = await client.get(base + "index.m3u8")
        assert r.status == 200
        r = await client.get("/static/vendor/hls.min.js")
        assert r.status == 200, "run scripts/vendor_js.sh (bootstrap does)"
    views = [json.loads(x) for x in (tmp_path / "data" / "views.jsonl").read_text().splitlines()]
    assert [(v["who"], v["lesson_id"], v["what"]) for v in views] == [
        ("observer:jiaoyan-li", LESSON, "live")]  # one view, however many requests


async def test_share_link_expiry_and_tampering_over_http(tmp_path: Path) -> None:
    config = _config()
    _lesson_dir(tmp_path / "live")
    app = create_app(config, tmp_path / "live", tmp_path / "data")
    async with TestClient(TestServer(app)) as client:
        base = f"/live/{LESSON}/"
        good = sign_share(SECRET, "live", LESSON, int(time.time()) + 60)
        r = await client.get(base + "index.m3u8", params={"share": good})
        assert r.status == 200
        r = await client.get(base + "segments/seg_000000.ts", params={"share": good})
        assert r.status == 200 and "public" in r.headers["Cache-Control"]
        old = sign_share(SECRET, "live", LESSON, int(time.time()) - 1)
        r = await client.get(base + "index.m3u8", params={"share": old})
        assert r.status == 401 and "expired" in await r.text()
        expires, mac = good.split(".")
        r = await client.get(base + "index.m3u8",
                             params={"share": f"{int(expires) + 86400}.{mac}"})
        assert r.status == 401 and "signature" in await r.text()
        replay = sign_share(SECRET, "replay", LESSON, int(time.time()) + 60)
        r = await client.get(base + "index.m3u8", params={"share": replay})
        assert r.status == 401
        # The page: the link becomes a cookie that ends with the link.
        r = await client.get(base, params={"share": good}, allow_redirects=False)
        assert r.status == 303
        assert "Max-Age=" in r.headers["Set-Cookie"]
        max_age = int(r.headers["Set-Cookie"].split("Max-Age=")[1].split(";")[0])
        assert 55 <= max_age <= 60
    app = create_app(_config(share=False), tmp_path / "live", tmp_path / "data2")
    async with TestClient(TestServer(app)) as client:
        r = await client.get(f"/live/{LESSON}/index.m3u8", params={"share": good})
        assert r.status == 401


async def test_wrong_credentials_are_limited_per_address(tmp_path: Path) -> None:
    """Guessing tokens or share links is no oracle: after ``auth_failures_per_min`` wrong
    ones from an address, every credential from it (the right one too) gets 429."""
    data = _config().model_dump(mode="json")
    data["media_server"]["auth_failures_per_min"] = 4
    config = CountyConfig.model_validate(data)
    _lesson_dir(tmp_path / "live")
    app = create_app(config, tmp_path / "live", tmp_path / "data")
    observer = config.observers[0].token
    base = f"/live/{LESSON}/"
    async with TestClient(TestServer(app)) as client:
        r = await client.get(base + "index.m3u8", headers={"Authorization": f"Bearer {observer}"})
        assert r.status == 200
        for i in range(2):
            r = await client.get(base + "index.m3u8", params={"token": f"guess-{i:020d}"})
            assert r.status == 401
        for bad in ("1.AAAA", f"{int(time.time()) + 60}.{'A' * 43}"):
            r = await client.get(base + "index.m3u8", params={"share": bad})
            assert r.status == 401
        for path, kwargs in ((base + "index.m3u8",
                              {"headers": {"Authorization": f"Bearer {observer}"}}),
                             ("/api/live", {"headers": {"Authorization": f"Bearer {observer}"}}),
                             (base, {"params": {"token": observer}}),
                             (base + "index.m3u8", {"params": {
                                 "share": sign_share(SECRET, "live", LESSON,
                                                     int(time.time()) + 60)}})):
            r = await client.get(path, allow_redirects=False, **kwargs)
            assert r.status == 429, path
            assert int(r.headers["Retry-After"]) >= 1
            assert "too many wrong credentials" in await r.text()


async def test_api_live_lists_only_allowed_lessons(tmp_path: Path) -> None:
    config = _config()
    _lesson_dir(tmp_path / "live", ended=True)
    app = create_app(config, tmp_path / "live", tmp_path / "data")
    pairing = config.pairing("shiyan-rural-math")
    other = next(c for c in config.classrooms
                 if c.id != pairing.main and c.id not in pairing.receiving)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/api/live", headers={
            "Authorization": f"Bearer {config.observers[0].token}"})
        lessons = (await r.json())["lessons"]
        assert [x["lesson_id"] for x in lessons] == [LESSON] and lessons[0]["ended"]
        r = await client.get("/api/live", headers={"Authorization": f"Bearer {other.token}"})
        assert (await r.json())["lessons"] == []
        r = await client.get(f"/live/{LESSON}/index.m3u8", headers={
            "Authorization": f"Bearer {config.observers[0].token}"})
        assert r.headers["Cache-Control"] == "private, max-age=60"


def test_share_command_prints_a_link_that_opens_the_lesson(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from syncclass.cli import main

    path = tmp_path / "county.yaml"
    data = yaml.safe_load((ROOT / "configs" / "county.yaml").read_text(encoding="utf-8"))
    data["media_server"] = {"share_secret": SECRET.decode(), "url": "https://live.example"}
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert main(["share", "--config", str(path), "--lesson", LESSON, "--hours", "1"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith(f"https://live.example/live/{LESSON}/?share=")
    value = url.split("share=")[1]
    expires = verify_share(SECRET, "live", LESSON, value, time.time())
    assert 3500 < expires - time.time() <= 3600
    assert main(["share", "--config", str(path), "--lesson", LESSON, "--hours", "9999"]) == 2
    assert main(["share", "--config", str(path), "--lesson", "../x", "--hours", "1"]) == 2
    del data["media_server"]
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert main(["share", "--config", str(path), "--lesson", LESSON]) == 2


def test_view_log_dedups_per_viewer_and_share_address(tmp_path: Path) -> None:
    log = ViewLog(tmp_path / "views.jsonl", dedup_s=600)
    for who, remote, t in (("observer:a", "10.0.0.1", 0), ("observer:a", "10.0.0.2", 10),
                           ("share", "10.0.0.1", 20), ("share", "10.0.0.2", 30),
                           ("share", "10.0.0.2", 40), ("observer:a", "10.0.0.1", 700)):
        line = log.claim(who, LESSON, "live", remote, now_s=1000 + t)
        if line is not None:
            log.write(line)
    views = [(v["who"], v["remote"], v["epoch_ms"]) for v in log.read()]
    assert views == [("observer:a", "10.0.0.1", 1_000_000), ("share", "10.0.0.1", 1_020_000),
                     ("share", "10.0.0.2", 1_030_000), ("observer:a", "10.0.0.1", 1_700_000)]
