"""The media server's aiohttp application: live HLS of every recording lesson.

Routes (``<id>`` a lesson id):

- ``GET /live/<id>/``: the watch page (hls.js where the browser has no native HLS).
  Opened as ``?token=<credential>`` or ``?share=<signed link>`` it sets an HttpOnly
  cookie granting that lesson for a while and redirects to the address without it.
- ``GET /live/<id>/index.m3u8``: the recorder's HLS playlist (an EVENT playlist of whole
  2 s MPEG-TS segments; ``#EXT-X-ENDLIST`` once the lesson ended).
- ``GET /live/<id>/segments/seg_NNNNNN.ts``: one segment.
- ``GET /api/live``: the lessons the bearer credential may watch (JSON).

The playlist and segments take the grant cookie, an ``Authorization: Bearer`` credential
or a ``share`` parameter. Files are read from the recorder's folder as the recorder wrote
them (it renames a segment into place only when it is complete, and replaces the playlist
atomically), so the server needs no coordination with the recorder and several servers
may serve the same folder.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from syncclass.config import CountyConfig, is_lesson_id
from syncclass.errors import AuthError
from syncclass.ratelimit import RateLimiter
from syncclass.sharelinks import Grants, ShareScope, verify_share

from .access import Viewer, ViewerIndex, ViewLog

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
_SEGMENT_RE = re.compile(r"^seg_[0-9]{6,9}\.ts$")
LIVE_PLAYLIST_CACHE = "private, no-cache"
"""A live playlist changes every segment: revalidate each time (browsers, proxies)."""
ENDED_PLAYLIST_CACHE = "private, max-age=60"
SEGMENT_CACHE = "private, max-age=86400, immutable"
"""A segment never changes once it is listed. ``private``: minors' video is never stored
by a shared cache unless served through a share link (public lessons)."""
SHARED_SEGMENT_CACHE = "public, max-age=86400, immutable"


def check_lesson_id(lesson_id: str) -> str:
    """``lesson_id`` if it follows the county's lesson id rule (safe as a folder name);
    404 otherwise."""
    if not is_lesson_id(lesson_id):
        raise web.HTTPNotFound(text="no such lesson")
    return lesson_id


@dataclass
class _Playlist:
    stamp: tuple[int, int]
    body: bytes
    ended: bool


class LiveLessons:
    """The recorder's lesson folders: metadata and playlists, cached by file stamp so many
    viewers reloading a playlist cost one read per change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._meta: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._playlists: dict[str, _Playlist] = {}

    def dir(self, lesson_id: str) -> Path:
        return self.root / check_lesson_id(lesson_id)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def meta(self, lesson_id: str) -> dict[str, Any] | None:
        """The lesson's ``meta.json`` (written by the recorder), or ``None``."""
        path = self.dir(lesson_id) / "meta.json"
        stamp = self._stamp(path)
        if stamp is None:
            return None
        cached = self._meta.get(lesson_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            meta = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            logger.warning("lesson %s: unreadable meta.json: %s", lesson_id, exc)
            return None
        if not isinstance(meta, dict):
            return None
        self._meta[lesson_id] = (stamp, meta)
        return meta

    def playlist(self, lesson_id: str) -> _Playlist | None:
        path = self.dir(lesson_id) / "index.m3u8"
        stamp = self._stamp(path)
        if stamp is None:
            return None
        cached = self._playlists.get(lesson_id)
        if cached is not None and cached.stamp == stamp:
            return cached
        try:
            body = path.read_bytes()
        except OSError:
            return None
        entry = _Playlist(stamp, body, b"#EXT-X-ENDLIST" in body)
        self._playlists[lesson_id] = entry
        return entry

    def lessons(self) -> list[dict[str, Any]]:
        """Metadata of every lesson folder (being recorded or not yet cleaned up)."""
        if not self.root.is_dir():
            return []
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and is_lesson_id(entry.name):
                meta = self.meta(entry.name)
                if meta is not None:
                    out.append(meta)
        return out


class MediaServer:
    """State of one media server process: config, credentials, grants, folders, view log."""

    def __init__(self, config: CountyConfig, live_dir: Path, data_dir: Path,
                 api_token: str | None = None) -> None:
        self.config = config
        self.cfg = config.media_server
        self.viewers = ViewerIndex(config, api_token)
        secret = (self.cfg.share_secret or "").encode()
        self.share_secret = secret if len(secret) >= 32 else None
        # Grants survive a restart when a secret is configured; else a fresh key.
        self.grants = Grants(secret if secret else secrets.token_bytes(32))
        self.live = LiveLessons(live_dir)
        self.views = ViewLog(data_dir / "views.jsonl")
        self.requests = 0
        per_min = self.cfg.auth_failures_per_min
        self.auth_failures = RateLimiter(per_min / 60.0, per_min)
        """Wrong credentials and share links per remote address."""

    # -- access ---------------------------------------------------------------------------
    def bearer(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[7:].strip() or None
        return None

    def _check_not_blocked(self, request: web.Request) -> None:
        """429 while ``request``'s address has used up its wrong-credential allowance:
        checked before any credential is looked at, so a right one guessed after many
        wrong ones is refused too."""
        key, now = request.remote or "?", time.monotonic()
        if self.auth_failures.blocked(key, now):
            retry = max(1, round(self.auth_failures.retry_after_s(key, now)))
            raise web.HTTPTooManyRequests(
                text="too many wrong credentials from this address; try again later",
                headers={"Retry-After": str(retry)})

    def _refuse(self, request: web.Request, text: str) -> web.HTTPUnauthorized:
        """Count a wrong credential against ``request``'s address; the 401 to raise."""
        self.auth_failures.allow(request.remote or "?", time.monotonic())
        return web.HTTPUnauthorized(text=text)

    def viewer_for(self, request: web.Request, token: str) -> Viewer:
        """The viewer ``token`` stands for; 401 (counted per address) if none, 429 while
        the address is blocked."""
        self._check_not_blocked(request)
        viewer = self.viewers.viewer_for_token(token)
        if viewer is None:
            raise self._refuse(request, "unknown or expired credential")
        return viewer

    def check_share(self, request: web.Request, scope: ShareScope, lesson_id: str,
                    value: str) -> None:
        """Verify a share link for ``lesson_id``; 401 (counted per address) if it is not
        valid, 429 while the address is blocked."""
        if self.share_secret is None:
            raise web.HTTPUnauthorized(text="share links are not enabled on this server")
        self._check_not_blocked(request)
        try:
            verify_share(self.share_secret, scope, lesson_id, value, time.time())
        except AuthError as exc:
            raise self._refuse(request, exc.message) from None

    def _from_credential(self, request: web.Request, token: str, pairing_id: str) -> str:
        viewer = self.viewer_for(request, token)
        if not viewer.may_watch(pairing_id):
            raise web.HTTPForbidden(text="this credential may not watch this lesson")
        return viewer.who

    def authorise(self, request: web.Request, scope: ShareScope, lesson_id: str,
                  pairing_id: str) -> str:
        """Who is asking for ``lesson_id``; 401/403 if nobody allowed."""
        token = self.bearer(request)  # an explicit credential speaks before any cookie
        if token is not None:
            return self._from_credential(request, token, pairing_id)
        grant = self.grants.verify(request.cookies.get(grant_cookie(scope, lesson_id)),
                                   f"{scope}:{lesson_id}", time.time())
        if grant is not None:
            return grant.who
        share = request.query.get("share")
        if share:
            self.check_share(request, scope, lesson_id, share)
            return "share"
        token = request.query.get("token")
        if token:
            return self._from_credential(request, token, pairing_id)
        raise web.HTTPUnauthorized(text="sign in: open the link you were given (with its "
                                        "token or share parameter)")

    def grant_response(self, request: web.Request, scope: ShareScope, lesson_id: str,
                       who: str, location: str) -> web.HTTPSeeOther:
        """Swap a credential in the query for a grant cookie and redirect without it."""
        lifetime = self.cfg.grant_lifetime_s
        share = request.query.get("share")
        expires = int(time.time() + lifetime)
        if share and who == "share":
            expires = min(expires, int(share.split(".", 1)[0]))
        value = self.grants.issue(f"{scope}:{lesson_id}", who, expires)
        resp = web.HTTPSeeOther(location)
        resp.set_cookie(grant_cookie(scope, lesson_id), value, max_age=max(1, expires -
                                                                           int(time.time())),
                        path=f"/{scope}/{lesson_id}/", httponly=True, samesite="Lax",
                        secure=request.secure)
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    async def log_view(self, who: str, lesson_id: str, what: str,
                       request: web.Request) -> None:
        line = self.views.claim(who, lesson_id, what, request.remote)
        if line is not None:
            await asyncio.to_thread(self.views.write, line)


def grant_cookie(scope: str, lesson_id: str) -> str:
    return f"sc_{scope}_{lesson_id}"


MEDIA_SERVER_KEY = web.AppKey("media_server", MediaServer)


def _server(request: web.Request) -> MediaServer:
    return request.app[MEDIA_SERVER_KEY]


def _lesson_pairing(ms: MediaServer, lesson_id: str) -> tuple[dict[str, Any], str]:
    meta = ms.live.meta(lesson_id)
    if meta is None:
        raise web.HTTPNotFound(text="no such lesson is being recorded")
    return meta, str(meta.get("pairing_id", ""))


# -- live -------------------------------------------------------------------------------------
WATCH_PAGE = (STATIC / "watch.html").read_text(encoding="utf-8")


async def watch_page(request: web.Request) -> web.StreamResponse:
    ms = _server(request)
    lesson_id = check_lesson_id(request.match_info["lesson_id"])
    meta, pairing = _lesson_pairing(ms, lesson_id)
    who = ms.authorise(request, "live", lesson_id, pairing)
    if "token" in request.query or "share" in request.query:
        raise ms.grant_response(request, "live", lesson_id, who, f"/live/{lesson_id}/")
    await ms.log_view(who, lesson_id, "live", request)
    title = " ".join(str(meta.get(k) or "") for k in ("subject", "grade", "teacher")).strip()
    page = (WATCH_PAGE.replace("{{title}}", html.escape(title or lesson_id))
            .replace("{{lesson_id}}", html.escape(lesson_id)))
    return web.Response(text=page, content_type="text/html", headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; "
                                   "worker-src 'self' blob:; style-src 'self' 'unsafe-inline'",
    })


async def live_playlist(request: web.Request) -> web.StreamResponse:
    ms = _server(request)
    lesson_id = check_lesson_id(request.match_info["lesson_id"])
    _, pairing = _lesson_pairing(ms, lesson_id)
    who = ms.authorise(request, "live", lesson_id, pairing)
    playlist = ms.live.playlist(lesson_id)
    if playlist is None:
        raise web.HTTPNotFound(text="no segment recorded yet", headers={
            "Cache-Control": "no-store"})
    await ms.log_view(who, lesson_id, "live", request)
    ms.requests += 1
    return web.Response(body=playlist.body, content_type=PLAYLIST_TYPE, headers={
        "Cache-Control": ENDED_PLAYLIST_CACHE if playlist.ended else LIVE_PLAYLIST_CACHE})


async def live_segment(request: web.Request) -> web.StreamResponse:
    ms = _server(request)
    lesson_id = check_lesson_id(request.match_info["lesson_id"])
    name = request.match_info["name"]
    if not _SEGMENT_RE.match(name):
        raise web.HTTPNotFound(text="no such segment")
    _, pairing = _lesson_pairing(ms, lesson_id)
    who = ms.authorise(request, "live", lesson_id, pairing)
    path = ms.live.dir(lesson_id) / "segments" / name
    if not path.is_file():
        raise web.HTTPNotFound(text="no such segment")
    await ms.log_view(who, lesson_id, "live", request)  # segments fetched without the page
    ms.requests += 1
    resp = web.FileResponse(path, headers={
        "Cache-Control": SHARED_SEGMENT_CACHE if who == "share" else SEGMENT_CACHE})
    resp.content_type = SEGMENT_TYPE
    return resp


async def live_list(request: web.Request) -> web.Response:
    """``GET /api/live``: lessons being recorded that the bearer credential may watch."""
    ms = _server(request)
    token = ms.bearer(request)
    if not token:
        raise web.HTTPUnauthorized(text="a bearer credential is needed")
    viewer = ms.viewer_for(request, token)
    out = []
    for meta in await asyncio.to_thread(ms.live.lessons):
        if not viewer.may_watch(str(meta.get("pairing_id", ""))):
            continue
        lid = str(meta.get("lesson_id"))
        playlist = ms.live.playlist(lid)
        out.append({"lesson_id": lid, "pairing_id": meta.get("pairing_id"),
                    "subject": meta.get("subject"), "grade": meta.get("grade"),
                    "teacher": meta.get("teacher"), "url": f"/live/{lid}/",
                    "playlist": f"/live/{lid}/index.m3u8",
                    "ended": playlist.ended if playlist else False})
    return web.json_response({"lessons": out})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def add_live(app: web.Application, ms: MediaServer) -> None:
    """The live routes and the static files of the pages."""
    app[MEDIA_SERVER_KEY] = ms
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/live", live_list)
    app.router.add_get("/live/{lesson_id}/", watch_page)
    app.router.add_get("/live/{lesson_id}/index.m3u8", live_playlist)
    app.router.add_get("/live/{lesson_id}/segments/{name}", live_segment)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
