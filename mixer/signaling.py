"""The mixer's signaling routes: the classrooms' WebSocket and the lesson API.

Routes:
- ``GET /ws`` — a classroom's signaling connection (see :mod:`syncclass.protocol`); an
  ``observer_hello`` hands the socket to the observer hub (:mod:`mixer.observer`).
- ``POST /api/lessons/start`` and ``/api/lessons/end`` — the main classroom's CLI
  (``Authorization: Bearer <classroom token>``).
- ``GET /api/lessons`` — lessons and who is connected.
- ``GET /api/stats`` — media counters (frames, encoder counts per view); for ops also
  the process's tasks, threads, descriptors and CPU seconds per kind of thread.
  Both need a dashboard session, the ops API token or a classroom/observer credential
  (which sees only its own pairings' lessons); see :mod:`mixer.guard`.
- ``GET /healthz`` (open).

:func:`setup_signaling` gets every service these routes use (the mixer, the guard, the
observer hub) from :func:`mixer.app.create_app`; handlers find them under this module's
own app key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from syncclass.directing import AUTO, COURSEWARE
from syncclass.errors import AuthError, InvalidStateError, ProtocolError
from syncclass.httperrors import json_error, json_object_body
from syncclass.protocol import (
    Answer,
    Direct,
    EndLesson,
    Hello,
    Leave,
    ObserverHello,
    Offer,
    Ping,
    Pong,
    RaiseHand,
    Redirect,
    ShareCourseware,
    StartLesson,
    Stats,
    Welcome,
    dumps_strict,
    encode,
    parse_client_message,
)
from syncclass.turn import ice_servers_for

from .analytics import raise_hand
from .core import ClassroomSession, Mixer, now_ms, reply_error
from .guard import Guard, hello_deadline, require_reader
from .guard.rates import refuse_unauthenticated
from .media import LessonMedia
from .observer import ObserverHub, serve_observer
from .threadcpu import thread_cpu_seconds

logger = logging.getLogger(__name__)


@dataclass
class Signaling:
    """What the signaling routes use, passed in by the app."""

    mixer: Mixer
    guard: Guard
    observers: ObserverHub
    """Observer connections (an ``observer_hello`` on ``/ws``)."""
    place: Callable[[str], Awaitable[tuple[str, str] | None]] | None = None
    """Several nodes (:meth:`mixer.cluster.Cluster.place`): where an authenticated classroom
    is served: ``None`` here, else ``(node id, node URL)`` it is redirected to."""


SIGNALING_KEY = web.AppKey("signaling", Signaling)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    signaling = request.app[SIGNALING_KEY]
    mixer = signaling.mixer
    limit = mixer.config.mixer.max_message_bytes
    # aiohttp refuses frames beyond max_msg_size outright (close 1009); between our limit
    # and that, the classroom gets an error reply and keeps its connection.
    ws = web.WebSocketResponse(heartbeat=mixer.config.mixer.heartbeat_s, max_msg_size=limit * 4)
    await ws.prepare(request)
    session: ClassroomSession | None = None
    hello_s = mixer.config.mixer.hello_timeout_s
    guard = signaling.guard
    hub = signaling.observers

    def authenticated() -> bool:
        return session is not None or any(o.ws is ws for o in hub.sessions.values())

    async def hello_timed_out() -> None:
        guard.stats.hello_timeouts += 1
        logger.info("closing a signaling socket from %s: no hello within %.1f s",
                    request.remote, hello_s)
        await reply_error(ws, mixer, "auth_timeout", f"no hello within {hello_s:g} s", None)

    watchdog = asyncio.ensure_future(hello_deadline(ws, authenticated, hello_s,
                                                    hello_timed_out))
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            ref: str | None = None
            try:
                message = parse_client_message(msg.data, limit)
                ref = message.type
                if session is None and isinstance(message, ObserverHello):
                    await serve_observer(hub, request, ws, message)
                    break
                if session is None:
                    if not isinstance(message, Hello):
                        raise AuthError("auth_required", "send 'hello' with your credential first")
                    session = await _hello(mixer, ws, message, request.remote,
                                           signaling.place)
                    if session is None:  # sent to its lesson's node
                        break
                    session.transport = request.transport
                    session.send_timeout_s = mixer.config.mixer.send_timeout_s
                    session.guard_stats = guard.stats
                    continue
                await _dispatch(mixer, session, message)
            except ProtocolError as exc:
                await reply_error(ws, mixer, exc.code, exc.message, ref)  # type: ignore[arg-type]
            except AuthError as exc:
                await reply_error(ws, mixer, exc.code, exc.message, ref)  # type: ignore[arg-type]
                mixer.limits.log_refusal(ref, request.remote, exc.message)
                if exc.code in ("auth_failed", "rate_limited") and session is None:
                    break
            except InvalidStateError as exc:
                await reply_error(ws, mixer, "no_lesson" if ref in ("offer", "raise_hand", "direct",
                                                                  "courseware")
                                   else "lesson_live", str(exc), ref)
            except Exception:  # one classroom's failure must not end its connection
                logger.exception("error handling %s", ref)
                await reply_error(ws, mixer, "internal", "internal error; see mixer log", ref)
            if session is None and await refuse_unauthenticated(ws, mixer.limits,
                                                                request.remote):
                break
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        if session is not None and mixer.sessions.get(session.classroom.id) is session:
            logger.info("classroom %s: disconnected", session.classroom.id)
            await mixer.leave(session, "disconnected")
            if mixer.sessions.get(session.classroom.id) is session:
                del mixer.sessions[session.classroom.id]
            mixer.emit("classroom_disconnected", None, session.classroom.id)
    return ws


async def _hello(mixer: Mixer, ws: web.WebSocketResponse, hello: Hello,
                 remote: str | None = None,
                 place: Callable[[str], Awaitable[tuple[str, str] | None]] | None = None,
                 ) -> ClassroomSession | None:
    """Welcome an authenticated classroom; ``None`` when it was redirected to another node
    (several nodes: its lesson is placed there)."""
    room = mixer.authenticate(hello.classroom_id, hello.token, remote)
    mixer.check_join_rate(room.id)
    target = await place(room.id) if place is not None else None
    if target is not None:
        node_id, url = target
        logger.info("classroom %s: redirected to node %s (%s)", room.id, node_id, url)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(encode(Redirect(url=url, node_id=node_id)))
        return None
    previous = mixer.sessions.get(room.id)
    if previous is not None:
        # The same classroom reconnected (e.g. after a network drop): the new one wins.
        logger.info("classroom %s: replacing previous connection", room.id)
        await mixer.leave(previous, "replaced")
        with contextlib.suppress(Exception):  # bounded: the old socket may not be reading
            await asyncio.wait_for(previous.ws.close(), previous.send_timeout_s)
    session = ClassroomSession(classroom=room, ws=ws, client=hello.client)
    mixer.sessions[room.id] = session
    lesson = mixer.lessons.lesson_of(room.id)
    await session.send(
        Welcome(
            classroom_id=room.id,
            classroom_number=mixer.config.classroom_number(room.id),
            role=room.role,
            name=room.name,
            lesson=lesson.info() if lesson else None,
            server_time_ms=now_ms(),
            ice_servers=ice_servers_for(mixer.config.mixer.turn, room.id, time.time()),
            nodes=[n.url.rstrip("/") for n in cluster.nodes]
            if (cluster := mixer.config.mixer.cluster) is not None else [],
        )
    )
    logger.info("classroom %s: authenticated (%s)", room.id, hello.client)
    mixer.emit("classroom_connected", lesson.lesson_id if lesson else None, room.id,
               client=hello.client)
    return session


async def _dispatch(mixer: Mixer, session: ClassroomSession, message: object) -> None:
    cid = session.classroom.id
    if isinstance(message, Hello):
        raise AuthError("already_authenticated", "this connection is already authenticated")
    if isinstance(message, StartLesson):
        mixer.limits.check("lesson_action", cid)
        mixer.lessons.start(cid, message.timetable_id)
    elif isinstance(message, EndLesson):
        mixer.limits.check("lesson_action", cid)
        mixer.lessons.end(cid)
    elif isinstance(message, Offer):
        paired = any(cid == p.main or cid in p.receiving for p in mixer.config.pairings)
        if not paired:
            raise AuthError("not_paired", f"classroom {cid!r} is not paired with any lesson")
        sdp = await mixer.accept_offer(session, message)
        await session.send(Answer(sdp=sdp))
    elif isinstance(message, Stats):
        session.stats = message.model_dump(exclude={"type"})
    elif isinstance(message, Ping):
        if mixer.limits.allow("ping", cid):  # beyond the limit: dropped, unanswered
            await session.send(Pong(id=message.id, server_time_ms=now_ms()))
    elif isinstance(message, Leave):
        await mixer.leave(session, "leave")
    elif isinstance(message, RaiseHand):
        raise_hand(mixer, cid)
    elif isinstance(message, Direct | ShareCourseware):
        media = _main_lesson_media(mixer, cid)
        if isinstance(message, ShareCourseware):
            media.set_courseware(message.on)
            return
        source = message.source
        if source not in (AUTO, COURSEWARE, *media.lesson.classrooms):
            raise ProtocolError("bad_message", f"cannot feature {source!r}: not a classroom "
                                "of this lesson, '@courseware' or 'auto'")
        media.set_directing(None if source == AUTO else source)


def _main_lesson_media(mixer: Mixer, cid: str) -> LessonMedia:
    """The media of the live lesson that ``cid`` teaches; AuthError for a receiving
    classroom, InvalidStateError without a live lesson."""
    if mixer.config.classroom(cid).role != "main":
        raise AuthError("not_allowed", "only the main classroom directs and shares courseware")
    lesson = mixer.lessons.lesson_of(cid)
    media = mixer.media.get(lesson.lesson_id) if lesson is not None else None
    if lesson is None or lesson.state != "live" or media is None:
        raise InvalidStateError(f"classroom {cid!r} has no live lesson")
    return media


# -- HTTP API -----------------------------------------------------------------------------------
def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise web.HTTPUnauthorized(
            text=json.dumps({"code": "auth_required", "message": "Bearer token required"}),
            content_type="application/json",
        )
    return auth[len("Bearer ") :]




async def _lesson_action(request: web.Request, action: str) -> web.Response:
    mixer = request.app[SIGNALING_KEY].mixer
    token = _bearer(request)
    body = await json_object_body(request, mixer.config.mixer.max_message_bytes)
    classroom_id = str(body.get("classroom_id", ""))
    try:
        room = mixer.authenticate(classroom_id, token, request.remote)
        mixer.limits.check("lesson_action", room.id)
        place = request.app[SIGNALING_KEY].place
        target = await place(room.id) if place is not None else None
        if target is not None:  # several nodes: the lesson is run by its pairing's node
            raise web.HTTPTemporaryRedirect(target[1] + request.path)
        if action == "start":
            timetable_id = body.get("timetable_id")
            lesson = mixer.lessons.start(room.id, str(timetable_id) if timetable_id else None)
        else:
            lesson = mixer.lessons.end(room.id)
    except AuthError as exc:
        status = {"auth_failed": web.HTTPUnauthorized,
                  "rate_limited": web.HTTPTooManyRequests}.get(exc.code, web.HTTPForbidden)
        raise json_error(status, exc.code, exc.message) from None
    except InvalidStateError as exc:
        raise json_error(web.HTTPConflict, "bad_state", str(exc)) from None
    return web.json_response(lesson.info().model_dump(), dumps=dumps_strict)


async def start_lesson(request: web.Request) -> web.Response:
    return await _lesson_action(request, "start")


async def end_lesson(request: web.Request) -> web.Response:
    return await _lesson_action(request, "end")


async def lessons(request: web.Request) -> web.Response:
    reader = require_reader(request)
    return web.json_response(request.app[SIGNALING_KEY].mixer.status(reader.pairings),
                             headers={"Cache-Control": "no-store"}, dumps=dumps_strict)


async def stats(request: web.Request) -> web.Response:
    reader = require_reader(request)
    signaling = request.app[SIGNALING_KEY]
    mixer = signaling.mixer
    rooms = mixer.classrooms_of(reader.pairings)
    body: dict[str, object] = {
        "media": {lid: m.stats() for lid, m in mixer.media.items()
                  if reader.may_read(m.lesson.pairing_id)},
        "errors_sent": mixer.errors_sent,
        "sessions": sorted(c for c in mixer.sessions if rooms is None or c in rooms),
    }
    if reader.is_ops:
        body["guard"] = dataclasses.asdict(signaling.guard.stats)
        # For leak checks (soak benchmark): the event loop's tasks, threads, descriptors.
        body["process"] = {"tasks": len(asyncio.all_tasks()),
                           "threads": threading.active_count(),
                           "fds": _open_fds(),
                           "thread_cpu_s": thread_cpu_seconds()}
    return web.json_response(body, headers={"Cache-Control": "no-store"}, dumps=dumps_strict)


def _open_fds() -> int | None:
    """Open file descriptors of this process (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def setup_signaling(app: web.Application, mixer: Mixer, *, guard: Guard,
                    observers: ObserverHub,
                    place: Callable[[str], Awaitable[tuple[str, str] | None]] | None = None,
                    ) -> Signaling:
    """Add ``/ws``, the lesson API, ``/api/stats`` and ``/healthz`` to the mixer's app.
    ``place``: several nodes' placement hook (see :attr:`Signaling.place`)."""
    signaling = Signaling(mixer, guard, observers, place)
    app[SIGNALING_KEY] = signaling
    app.router.add_get("/ws", websocket_handler)
    app.router.add_post("/api/lessons/start", start_lesson)
    app.router.add_post("/api/lessons/end", end_lesson)
    app.router.add_get("/api/lessons", lessons)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/healthz", healthz)
    return signaling
