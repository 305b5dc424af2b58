"""Replay (点播): the archive page, a lesson's replay page with its analytics on the video's
timeline, comments while replaying, MP4 download, publishing (审核) and retention.

Routes:

- ``GET/POST /archive/login``, ``POST /archive/logout``: ops users sign in with their
  password (``ops.users``); observers and classrooms open ``/archive/?token=...``.
- ``GET /archive/``: lessons the viewer may replay, filtered by school, subject, grade,
  teacher, date and a free-text search.
- ``POST /archive/<id>/publish`` (``publish=1|0``), ``POST /archive/<id>/delete``: ops only.
- ``GET /replay/<id>/``: the replay page (also ``?token=`` / ``?share=`` as live).
- ``GET /replay/<id>/data.json``: metadata, timeline (video seconds) and comments.
- ``GET /replay/<id>/lesson.mp4`` (``?download=1``: as a file): the local file, or a
  redirect to a presigned URL of the S3 archive.
- ``POST /replay/<id>/comments``: ``{"text", "video_s"}``, observers and ops.

Who may replay: ops every lesson; a pairing's classrooms and observers its lessons; once an
ops user has published a lesson, every signed-in viewer; a share link (scope ``replay``)
that one lesson. Every view and download is logged (who, when, what).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from syncclass.auth import LoginRateLimiter, verify_password

from .access import Viewer
from .app import STATIC, MediaServer, check_lesson_id, grant_cookie
from .archive import ArchiveSource, ReplayState, read_live_comments, recorded_from_ms

logger = logging.getLogger(__name__)

ARCHIVE_COOKIE = "sc_archive"
MP4_URL_S = 3600
"""Presigned URLs of S3 videos are valid this long (seconds)."""
MAX_COMMENT_CHARS = 2000
SHARE = Viewer("share", frozenset())


class Replay:
    """The replay side of a media server: archive, state, comments, retention."""

    def __init__(self, server: MediaServer, source: ArchiveSource, state: ReplayState,
                 mixer_data_dir: Path, live_dir: Path) -> None:
        self.server = server
        self.source = source
        self.state = state
        self.mixer_data_dir = mixer_data_dir
        self.live_dir = live_dir
        self.logins = LoginRateLimiter(max_failures=server.config.ops.login_max_failures)

    # -- who ------------------------------------------------------------------------------
    def identify(self, request: web.Request, lesson_id: str | None) -> Viewer | None:
        ms = self.server
        now = time.time()
        bearer = ms.bearer(request)  # an explicit credential speaks before any cookie
        if bearer:
            return ms.viewer_for(request, bearer)
        if lesson_id is not None:
            grant = ms.grants.verify(request.cookies.get(grant_cookie("replay", lesson_id)),
                                     f"replay:{lesson_id}", now)
            if grant is not None:
                return SHARE if grant.who == "share" else ms.viewers.viewer_for_who(grant.who)
        grant = ms.grants.verify(request.cookies.get(ARCHIVE_COOKIE), "archive", now)
        if grant is not None:
            viewer = ms.viewers.viewer_for_who(grant.who)
            if viewer is not None:
                return viewer
        token = request.query.get("token")
        if token:
            return ms.viewer_for(request, token)
        share = request.query.get("share")
        if share and lesson_id is not None:
            ms.check_share(request, "replay", lesson_id, share)
            return SHARE
        return None

    def may_replay(self, viewer: Viewer, meta: dict[str, Any], published: bool,
                   via_share: bool = False) -> bool:
        if viewer is SHARE:
            return via_share
        return published or viewer.may_watch(str(meta.get("pairing_id", "")))

    async def lesson_for(self, request: web.Request) -> tuple[str, dict[str, Any], Viewer]:
        """The lesson of the request's path, its metadata, and an allowed viewer."""
        lesson_id = check_lesson_id(request.match_info["lesson_id"])
        viewer = self.identify(request, lesson_id)
        if viewer is None:
            raise web.HTTPUnauthorized(text="sign in at /archive/login or open the link you "
                                            "were given")
        meta = await asyncio.to_thread(self.source.metadata, lesson_id)
        if meta is None or lesson_id in await asyncio.to_thread(self.state.deleted):
            raise web.HTTPNotFound(text="no such lesson in the archive")
        published = lesson_id in await asyncio.to_thread(self.state.published)
        if not self.may_replay(viewer, meta, published, via_share=True):
            raise web.HTTPForbidden(text="this lesson is private to its pairing until it "
                                         "is published")
        return lesson_id, meta, viewer

    # -- lessons --------------------------------------------------------------------------
    def visible(self, viewer: Viewer) -> list[dict[str, Any]]:
        """Archived lessons ``viewer`` may replay, newest first, with their state (blocking)."""
        published = self.state.published()
        deleted = self.state.deleted()
        out: list[dict[str, Any]] = []
        for meta in self.source.lessons():
            lid = str(meta.get("lesson_id"))
            if lid in deleted or viewer is SHARE:
                continue
            if self.may_replay(viewer, meta, lid in published):
                out.append({**meta, "published": published.get(lid)})
        out.sort(key=lambda m: -int(m.get("start_ms") or 0))  # newest first
        return out

    def report(self, lesson_id: str) -> dict[str, Any] | None:
        """The lesson report: beside the recording, else in the mixer's data folder."""
        report = self.source.read_json(lesson_id, "report.json")
        if report is None:
            path = self.mixer_data_dir / "reports" / lesson_id / "report.json"
            with contextlib.suppress(OSError, ValueError):
                value = json.loads(path.read_text(encoding="utf-8"))
                report = value if isinstance(value, dict) else None
        return report

    def comments(self, lesson_id: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
        offset_ms = recorded_from_ms(meta) - int(meta.get("start_ms") or 0)
        out: list[dict[str, Any]] = []
        for origin, records in (("live", read_live_comments(self.mixer_data_dir, lesson_id)),
                                ("replay", self.state.comments(lesson_id))):
            for c in records:
                out.append({"seq": c.seq, "origin": origin, "author": c.author,
                            "text": c.text, "lesson_ms": c.lesson_ms,
                            "video_s": round((c.lesson_ms - offset_ms) / 1000, 3)})
        out.sort(key=lambda c: c["lesson_ms"])
        return out

    async def delete(self, lesson_id: str, by: str, reason: str) -> None:
        """Delete the archived lesson (video, metadata, poster, report) and the recorder's
        segments of it; keep a row saying who deleted it, when and why."""
        await asyncio.to_thread(self.source.delete, lesson_id)
        live = self.live_dir / check_lesson_id(lesson_id)
        if live.is_dir():
            await asyncio.to_thread(shutil.rmtree, live, True)
        await asyncio.to_thread(self.state.mark_deleted, lesson_id, by, reason)
        logger.info("lesson %s: deleted from the archive by %s (%s)", lesson_id, by, reason)

    async def apply_retention(self, now_s: float | None = None) -> list[str]:
        """Delete archived lessons that ended more than ``retention_days`` ago."""
        days = self.server.cfg.retention_days
        if days is None:
            return []
        cutoff_ms = ((time.time() if now_s is None else now_s) - days * 86400) * 1000
        lessons = await asyncio.to_thread(self.source.lessons)
        deleted = await asyncio.to_thread(self.state.deleted)
        gone = []
        for meta in lessons:
            lid = str(meta.get("lesson_id"))
            end_ms = int(meta.get("end_ms") or meta.get("start_ms") or 0)
            if lid not in deleted and 0 < end_ms < cutoff_ms:
                await self.delete(lid, "retention", f"older than {days:g} days")
                gone.append(lid)
        return gone


def timeline(meta: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
    """The report's events on the video's clock (seconds from its first frame)."""
    t0 = recorded_from_ms(meta)

    def s(ms: float) -> float:
        return round((ms - t0) / 1000, 3)

    out: dict[str, Any] = {"duration_s": meta.get("video_duration_s"), "classrooms": [],
                           "st": None, "directing": []}
    if report is None:
        return out
    for c in report.get("classrooms", []):
        out["classrooms"].append({
            "id": c.get("classroom_id"), "label": c.get("label") or c.get("name"),
            "role": c.get("role"),
            "speech": [[s(a), s(b)] for a, b in c.get("speech", {}).get("segments", [])],
            "present": [[s(a), s(b)] for a, b in c.get("present_intervals", [])],
            "hands": [s(t) for t in c.get("hand_raises", {}).get("ts_ms", [])],
            "talk_s": c.get("speech", {}).get("talk_s"),
            "attendance_ratio": c.get("attendance_ratio"),
        })
    st = report.get("st")
    if isinstance(st, dict) and st.get("codes") is not None:
        out["st"] = {"first_s": s(int(st.get("first_sample_ms") or t0)),
                     "interval_s": st.get("interval_s"), "codes": st.get("codes"),
                     "curve": st.get("curve"), "rt": st.get("rt"), "ch": st.get("ch"),
                     "lesson_type": st.get("lesson_type")}
    for d in report.get("directing", []) or []:  # present when the mixer directs views
        if isinstance(d, dict) and "ts_ms" in d:
            out["directing"].append({"t": s(d["ts_ms"]), "to": d.get("to")})
    return out


REPLAY_KEY = web.AppKey("replay", Replay)


def _replay(request: web.Request) -> Replay:
    return request.app[REPLAY_KEY]


PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": "default-src 'self'; media-src 'self' blob: "
                "http: https:; style-src 'self' 'unsafe-inline'; form-action 'self'"}


def _page(title: str, body: str) -> web.Response:
    doc = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f'<title>{html.escape(title)}</title><link rel="stylesheet" href="/static/media.css">'
           f'</head><body>{body}</body></html>')
    return web.Response(text=doc, content_type="text/html", headers=PAGE_HEADERS)


def _set_archive_cookie(rp: Replay, resp: web.StreamResponse, request: web.Request,
                        who: str) -> None:
    lifetime = rp.server.config.ops.session_lifetime_s
    value = rp.server.grants.issue("archive", who, int(time.time() + lifetime))
    resp.set_cookie(ARCHIVE_COOKIE, value, max_age=lifetime, path="/", httponly=True,
                    samesite="Strict", secure=request.secure)


async def login_page(request: web.Request) -> web.Response:
    error = request.query.get("error")
    msg = '<p class="status">wrong user or password</p>' if error else ""
    return _page("登录 · 点播", f"""<header><h1>点播 Archive · 登录 sign in</h1></header><main>
{msg}<form method="post" action="/archive/login">
<p><label>user <input name="user" autocomplete="username"></label></p>
<p><label>password <input name="password" type="password" autocomplete="current-password">
</label></p><p><button type="submit">sign in</button></p></form>
<p class="hint">Observers and classrooms: open the archive link you were given.</p></main>""")


async def login(request: web.Request) -> web.StreamResponse:
    rp = _replay(request)
    form = await request.post()
    user, password = str(form.get("user", "")), str(form.get("password", ""))
    key = request.remote or "?"
    now = time.time()
    if rp.logins.blocked_for(key, now) > 0:
        raise web.HTTPTooManyRequests(text="too many failed sign-ins; try again later")
    account = next((u for u in rp.server.config.ops.users if u.name == user), None)
    ok = account is not None and await asyncio.to_thread(verify_password, password,
                                                         account.password_hash)
    if not ok:
        rp.logins.failed(key, now)
        raise web.HTTPSeeOther("/archive/login?error=1")
    rp.logins.succeeded(key)
    resp = web.HTTPSeeOther("/archive/")
    _set_archive_cookie(rp, resp, request, f"ops:{user}")
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    resp = web.HTTPSeeOther("/archive/login")
    resp.del_cookie(ARCHIVE_COOKIE, path="/")
    raise resp


def _matches(meta: dict[str, Any], q: dict[str, str]) -> bool:
    schools = meta.get("schools") or []
    school_text = " ".join(f"{x.get('id', '')} {x.get('name', '')}" for x in schools)
    for key in ("subject", "grade", "teacher"):
        if q.get(key) and q[key] != str(meta.get(key, "")):
            return False
    if q.get("school") and q["school"] not in school_text:
        return False
    if q.get("date") and not str(meta.get("start", "")).startswith(q["date"]):
        return False
    if q.get("q"):
        hay = " ".join(str(meta.get(k, "")) for k in ("lesson_id", "subject", "grade",
                                                       "teacher", "start")) + school_text
        if q["q"].lower() not in hay.lower():
            return False
    return True


async def archive_page(request: web.Request) -> web.StreamResponse:
    rp = _replay(request)
    if "token" in request.query:
        viewer = rp.identify(request, None)
        assert viewer is not None
        resp = web.HTTPSeeOther("/archive/")
        _set_archive_cookie(rp, resp, request, viewer.who)
        raise resp
    viewer = rp.identify(request, None)
    if viewer is None or viewer is SHARE:
        raise web.HTTPSeeOther("/archive/login")
    q = {k: request.query.get(k, "").strip() for k in ("school", "subject", "grade",
                                                        "teacher", "date", "q")}
    lessons = [m for m in await asyncio.to_thread(rp.visible, viewer) if _matches(m, q)]
    is_ops = viewer.pairings is None
    e = html.escape
    rows = []
    for m in lessons:
        lid = str(m["lesson_id"])
        schools = "、".join(str(s.get("name", "")) for s in m.get("schools") or [])
        state = "已发布 published" if m.get("published") else "未发布 private"
        actions = ""
        if is_ops:
            flip = "0" if m.get("published") else "1"
            label = "withdraw" if m.get("published") else "publish 发布"
            actions = (f'<form method="post" action="/archive/{e(lid)}/publish" '
                       f'style="display:inline"><input type="hidden" name="publish" '
                       f'value="{flip}"><button>{label}</button></form> '
                       f'<form method="post" action="/archive/{e(lid)}/delete" '
                       f'style="display:inline"><button>delete</button></form>')
        rows.append(
            f'<tr data-lesson="{e(lid)}"><td>{e(str(m.get("start", ""))[:16])}</td>'
            f'<td>{e(schools)}</td><td>{e(str(m.get("subject", "")))}</td>'
            f'<td>{e(str(m.get("grade", "")))}</td><td>{e(str(m.get("teacher", "")))}</td>'
            f'<td>{float(m.get("duration_s") or 0) / 60:.0f} min</td><td>{state}</td>'
            f'<td><a href="/replay/{e(lid)}/">回放 replay</a> {actions}</td></tr>')
    inputs = "".join(
        f'<label>{label} <input name="{k}" value="{e(q[k])}" size="10"></label> '
        for k, label in (("school", "学校 school"), ("subject", "学科 subject"),
                         ("grade", "年级 grade"), ("teacher", "教师 teacher"),
                         ("date", "日期 date"), ("q", "搜索 search")))
    body = f"""<header><h1>点播 Archive</h1><span class="status">{e(viewer.who)}</span>
<form method="post" action="/archive/logout"><button>sign out</button></form></header><main>
<form method="get" action="/archive/">{inputs}<button type="submit">filter</button></form>
<table id="lessons"><tr><th>date</th><th>school</th><th>subject</th><th>grade</th>
<th>teacher</th><th>length</th><th>state</th><th></th></tr>{"".join(rows)}</table>
<p class="hint">{len(rows)} lesson(s)</p></main>"""
    return _page("点播 Archive", body)


def _ops(rp: Replay, request: web.Request) -> Viewer:
    viewer = rp.identify(request, None)
    if viewer is None or viewer.pairings is not None:
        raise web.HTTPForbidden(text="only ops users may publish or delete lessons")
    return viewer


async def publish(request: web.Request) -> web.StreamResponse:
    rp = _replay(request)
    viewer = _ops(rp, request)
    lesson_id = check_lesson_id(request.match_info["lesson_id"])
    if await asyncio.to_thread(rp.source.metadata, lesson_id) is None:
        raise web.HTTPNotFound(text="no such lesson in the archive")
    form = await request.post()
    on = str(form.get("publish", "1")) == "1"
    await asyncio.to_thread(rp.state.publish, lesson_id, viewer.who, on)
    logger.info("lesson %s: %s by %s", lesson_id, "published" if on else "withdrawn",
                viewer.who)
    raise web.HTTPSeeOther("/archive/")


async def delete(request: web.Request) -> web.StreamResponse:
    rp = _replay(request)
    viewer = _ops(rp, request)
    lesson_id = check_lesson_id(request.match_info["lesson_id"])
    if await asyncio.to_thread(rp.source.metadata, lesson_id) is None:
        raise web.HTTPNotFound(text="no such lesson in the archive")
    await rp.delete(lesson_id, viewer.who, "deleted by ops")
    raise web.HTTPSeeOther("/archive/")


REPLAY_PAGE = (STATIC / "replay.html").read_text(encoding="utf-8")


async def replay_page(request: web.Request) -> web.StreamResponse:
    rp = _replay(request)
    lesson_id, meta, viewer = await rp.lesson_for(request)
    if "token" in request.query or "share" in request.query:
        raise rp.server.grant_response(request, "replay", lesson_id, viewer.who,
                                       f"/replay/{lesson_id}/")
    title = " ".join(str(meta.get(k) or "") for k in ("subject", "grade", "teacher"))
    page = (REPLAY_PAGE.replace("{{title}}", html.escape(title.strip() or lesson_id))
            .replace("{{start}}", html.escape(str(meta.get("start", ""))[:16])))
    return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)


async def replay_data(request: web.Request) -> web.Response:
    rp = _replay(request)
    lesson_id, meta, viewer = await rp.lesson_for(request)
    report = await asyncio.to_thread(rp.report, lesson_id)
    comments = await asyncio.to_thread(rp.comments, lesson_id, meta)
    can_comment = viewer.pairings is None or viewer.who.startswith("observer:")
    return web.json_response({
        "lesson": {k: meta.get(k) for k in ("lesson_id", "pairing_id", "subject", "grade",
                                            "teacher", "start", "end", "duration_s",
                                            "schools", "classrooms", "gaps")},
        "video": {"url": "lesson.mp4", "download": "lesson.mp4?download=1",
                  "duration_s": meta.get("video_duration_s"),
                  "offset_ms": recorded_from_ms(meta) - int(meta.get("start_ms") or 0)},
        "timeline": timeline(meta, report),
        "report": report is not None,
        "comments": comments,
        "can_comment": can_comment,
        "viewer": viewer.who,
    }, headers={"Cache-Control": "no-store"})


async def lesson_mp4(request: web.Request) -> web.StreamResponse:
    rp = _replay(request)
    lesson_id, _, viewer = await rp.lesson_for(request)
    download = request.query.get("download") == "1"
    what = "download" if download else "replay"
    # A video player asks for many byte ranges; the log dedups them into one view.
    await rp.server.log_view(viewer.who, lesson_id, what, request)
    path = rp.source.local_file(lesson_id, "lesson.mp4")
    if path is not None:
        headers = {"Cache-Control": "private, max-age=3600"}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="{lesson_id}.mp4"'
        resp = web.FileResponse(path, headers=headers)
        resp.content_type = "video/mp4"
        return resp
    url = await asyncio.to_thread(rp.source.url, lesson_id, "lesson.mp4", MP4_URL_S, download)
    if url is None:
        raise web.HTTPNotFound(text="the lesson video is not in the archive")
    raise web.HTTPFound(url, headers={"Cache-Control": "no-store"})


async def add_comment(request: web.Request) -> web.Response:
    rp = _replay(request)
    lesson_id, meta, viewer = await rp.lesson_for(request)
    if not (viewer.pairings is None or viewer.who.startswith("observer:")):
        raise web.HTTPForbidden(text="only observers and ops users comment on lessons")
    try:
        body = await request.json()
        text = str(body["text"]).strip()
        video_s = float(body["video_s"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='send {"text": "...", "video_s": seconds}') from None
    if not text or len(text) > MAX_COMMENT_CHARS:
        raise web.HTTPBadRequest(text=f"a comment has 1 to {MAX_COMMENT_CHARS} characters")
    duration = float(meta.get("video_duration_s") or 0)
    if not 0 <= video_s <= max(duration, 0) + 1:
        raise web.HTTPBadRequest(text=f"video_s must be within the video (0..{duration:g})")
    offset_ms = recorded_from_ms(meta) - int(meta.get("start_ms") or 0)
    kind, _, ident = viewer.who.partition(":")
    author = ident
    if kind == "observer":
        with contextlib.suppress(KeyError):
            author = rp.server.config.observer(ident).name
    record = await asyncio.to_thread(rp.state.add_comment, {
        "lesson_id": lesson_id, "pairing_id": str(meta.get("pairing_id", "")),
        "observer_id": viewer.who, "author": author, "text": text,
        "lesson_ms": max(0, round(video_s * 1000 + offset_ms)),
        "epoch_ms": int(time.time() * 1000)})
    return web.json_response({"seq": record.seq, "origin": "replay", "author": record.author,
                              "text": record.text, "lesson_ms": record.lesson_ms,
                              "video_s": round((record.lesson_ms - offset_ms) / 1000, 3)},
                             status=201)


async def _retention_loop(rp: Replay) -> None:
    while True:
        try:
            gone = await rp.apply_retention()
            if gone:
                logger.info("retention: deleted %d lesson(s)", len(gone))
        except Exception:  # storage down: try again next round, never stop the loop
            logger.exception("retention sweep failed")
        await asyncio.sleep(3600)


def add_replay(app: web.Application, rp: Replay) -> None:
    app[REPLAY_KEY] = rp
    app.router.add_get("/archive/login", login_page)
    app.router.add_post("/archive/login", login)
    app.router.add_post("/archive/logout", logout)
    app.router.add_get("/archive/", archive_page)
    app.router.add_post("/archive/{lesson_id}/publish", publish)
    app.router.add_post("/archive/{lesson_id}/delete", delete)
    app.router.add_get("/replay/{lesson_id}/", replay_page)
    app.router.add_get("/replay/{lesson_id}/data.json", replay_data)
    app.router.add_get("/replay/{lesson_id}/lesson.mp4", lesson_mp4)
    app.router.add_post("/replay/{lesson_id}/comments", add_comment)

    async def retention(app: web.Application) -> Any:
        task = asyncio.create_task(_retention_loop(rp), name="retention")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    if rp.server.cfg.retention_days is not None:
        app.cleanup_ctx.append(retention)
