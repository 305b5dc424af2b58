"""Browser clients: the classroom join page, the observer page and lesson comments.

Routes added to the mixer's app by :func:`setup_browser`:

- ``GET /join`` — a classroom without an agent takes part from Chrome/Chromium: it logs
  in with its classroom id and credential, sends camera and microphone, shows its view and
  plays its N-1 mix (same ``/ws`` protocol as agents, ``client: "browser"``).
- ``GET /observe`` — an observer (教研员) watches ``students_view`` and writes comments.
- ``GET /static/browser/*`` — the pages' plain JS (no build step, no CDN).
- ``GET /api/lessons/{lesson_id}/comments`` — the lesson's comments
  (``Authorization: Bearer <token>`` of an observer allowed to watch the lesson's pairing
  or of a classroom in that pairing).
- ``GET /api/observers`` — connected observers (ops only: dashboard session or
  ``ops.api_token``).

Both pages accept ``#classroom=<id>&token=<credential>`` (or ``#observer=...&token=...``)
in the URL fragment, which browsers never send to the server, to log in without typing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from syncclass.httperrors import json_error

from .comments import CommentStore, check_lesson_id
from .core import Mixer
from .guard import require_ops
from .observer import OBSERVERS_KEY, ObserverHub

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")


@dataclass
class Browser:
    """What the browser routes use, passed in by the app."""

    mixer: Mixer
    observers: ObserverHub
    comments: CommentStore


BROWSER_KEY = web.AppKey("browser", Browser)




def _page(name: str) -> web.FileResponse:
    response = web.FileResponse(STATIC_DIR / name)
    response.headers["Cache-Control"] = "no-store"
    return response


async def join_page(request: web.Request) -> web.StreamResponse:
    return _page("join.html")


async def observe_page(request: web.Request) -> web.StreamResponse:
    return _page("observe.html")


def _pairings_of_token(mixer: Mixer, hub: ObserverHub, token: str) -> set[str] | None:
    """Pairings whose lessons the holder of ``token`` may read; ``None``: unknown token."""
    observer = hub.observer_for_token(token)
    if observer is not None:
        return set(observer.pairings)
    room = mixer.classroom_for_token(token)  # static or signed (syncclass.tokens)
    if room is None:
        return None
    return {p.id for p in mixer.config.pairings if room.id == p.main or room.id in p.receiving}


async def lesson_comments(request: web.Request) -> web.Response:
    browser = request.app[BROWSER_KEY]
    mixer, hub, store = browser.mixer, browser.observers, browser.comments
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise json_error(web.HTTPUnauthorized, "auth_required", "Bearer token required")
    allowed = _pairings_of_token(mixer, hub, auth[len("Bearer "):])
    if allowed is None:
        raise json_error(web.HTTPUnauthorized, "auth_failed", "unknown credential")
    try:
        lesson_id = check_lesson_id(request.match_info["lesson_id"])
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "bad_message", str(exc)) from None
    comments = store.read(lesson_id)
    lesson = next((x for x in mixer.lessons.all_lessons() if x.lesson_id == lesson_id), None)
    if lesson is not None:
        pairing_id: str | None = lesson.pairing_id
    elif comments:
        pairing_id = comments[0].pairing_id
    else:
        pairing_id = None
    if pairing_id is None:
        raise json_error(web.HTTPNotFound, "not_found", f"no lesson {lesson_id!r} with comments")
    if pairing_id not in allowed:
        raise json_error(web.HTTPForbidden, "not_paired",
                         "this credential may not read this lesson")
    return web.json_response({
        "lesson_id": lesson_id,
        "pairing_id": pairing_id,
        "started_ms": lesson.started_ms if lesson else None,
        "comments": [c.model_dump(exclude={"type"}) for c in comments or []],
    })


async def observers_status(request: web.Request) -> web.Response:
    require_ops(request)
    return web.json_response(request.app[BROWSER_KEY].observers.status(),
                             headers={"Cache-Control": "no-store"})


def setup_browser(app: web.Application, mixer: Mixer) -> ObserverHub:
    """Add the browser pages, the observer hub and the comments API to the mixer's app;
    returns the hub (its credentials are the guard's, ``/ws`` hands it observers)."""
    store = CommentStore(mixer.config.mixer.data_dir)
    hub = ObserverHub(mixer, store)
    app[BROWSER_KEY] = Browser(mixer, hub, store)
    app[OBSERVERS_KEY] = hub  # for tests and tools; no mixer module reads it

    async def on_shutdown(app: web.Application) -> None:
        await hub.aclose()

    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/join", join_page)
    app.router.add_get("/observe", observe_page)
    app.router.add_static("/static/browser/", STATIC_DIR)
    app.router.add_get("/api/lessons/{lesson_id}/comments", lesson_comments)
    app.router.add_get("/api/observers", observers_status)
    return hub
