"""The mixer's core: :class:`Mixer` (lessons, classroom sessions, peers and media of one
mixer process), :class:`ClassroomSession` and the app key they are stored under.

Imports only lower layers (the ``syncclass`` core, the media pipeline, the guard's
WebSocket helpers); subsystems, routes and the app build on it (see README, "How it
works").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from syncclass.config import ClassroomConfig, CountyConfig
from syncclass.directing import COURSEWARE
from syncclass.errors import AuthError, InvalidStateError, ProtocolError
from syncclass.events import Event, EventBus, EventName
from syncclass.lesson import Lesson, LessonRegistry, load_lessons, save_lessons
from syncclass.lipsync import SenderClock
from syncclass.protocol import (
    Error,
    ErrorCode,
    Layout,
    LessonState,
    Offer,
    encode,
)
from syncclass.ratelimit import RateLimiter
from syncclass.rtc import (
    close_peer,
    new_peer_connection,
    observe_rtcp_feedback,
    observe_sender_reports,
    prefer_codec,
    route_keyframe_requests,
)
from syncclass.tokens import SigningKey, looks_signed, verify_token
from syncclass.transportcc import observe_transport_estimate
from syncclass.turn import advertise_addresses

from .guard import (
    GuardStats,
    bounded_send,
)
from .guard.rates import SignalingLimits
from .media import LessonMedia

logger = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ClassroomSession:
    """One authenticated signaling connection and, while in a lesson, its peer."""

    classroom: ClassroomConfig
    ws: web.WebSocketResponse
    client: str
    pc: RTCPeerConnection | None = None
    lesson_id: str | None = None
    connected_ms: int = field(default_factory=now_ms)
    stats: dict[str, object] = field(default_factory=dict)
    joined: bool = False
    """Whether media is flowing in the current lesson (peer connected)."""
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    transport: asyncio.Transport | None = None
    """The connection, dropped when the classroom stops reading (see ``send``)."""
    send_timeout_s: float = 5.0
    guard_stats: GuardStats | None = None

    async def send(self, message: object) -> None:
        """Send a message; a classroom that does not read within ``send_timeout_s`` is
        disconnected (the lock only ever waits that long)."""
        if self.ws.closed:
            return
        async with self.send_lock:
            await bounded_send(self.ws, encode(message),  # type: ignore[arg-type]
                               self.send_timeout_s, self.transport,
                               f"classroom {self.classroom.id}", self.guard_stats)



class Mixer:
    """Lessons, sessions and media of one mixer process."""

    def __init__(self, config: CountyConfig, lessons_path: Path | None = None) -> None:
        self.config = config
        self.lessons = LessonRegistry(config, now_ms)
        self.lessons.on_change.append(self._lesson_changed)
        self.sessions: dict[str, ClassroomSession] = {}
        self.peers: set[RTCPeerConnection] = set()
        """Every peer connection not yet closed (closed on shutdown, so none leaks)."""
        self.media: dict[str, LessonMedia] = {}
        self.advertised_addresses = {str(k): str(v) for k, v in
                                     config.mixer.ice_advertised_addresses.items()}
        """Host address -> address written in answers' candidates (1:1 NAT)."""
        self._tokens = {c.token: c for c in config.classrooms}
        self._signing_keys = [SigningKey(k.id, k.secret.encode()) for k in config.mixer.token_keys]
        self.auth_failures = RateLimiter(config.mixer.auth_failures_per_min / 60.0,
                                         config.mixer.auth_failures_per_min)
        """Failed credentials per remote address."""
        self.joins = RateLimiter(config.mixer.joins_per_min / 60.0, config.mixer.joins_per_min)
        """Hellos and offers per classroom."""
        self.limits = SignalingLimits(config.mixer)
        """Lesson starts/ends, pings, comments; the refusal log (issue 18)."""
        self.lessons_path = lessons_path or Path(config.mixer.data_dir) / "lessons.json"
        """Live lessons, rewritten (atomically) on every change; reloaded at start (a media
        worker has its own: ``<data_dir>/workers/<n>/lessons.json``)."""
        self._bg: set[asyncio.Task[None]] = set()
        self.errors_sent = 0
        self.events = EventBus()
        self.on_media_created: list[Callable[[LessonMedia], None]] = []
        """Called when a lesson's media pipeline starts (recorder, analytics attach taps)."""
        self.on_media_closing: list[Callable[[LessonMedia], None]] = []

    def emit(self, name: EventName, lesson_id: str | None = None,
             classroom_id: str | None = None, **data: Any) -> None:
        self.events.emit(Event(name, now_ms(), lesson_id, classroom_id, data))

    # -- auth ---------------------------------------------------------------------------------
    def classroom_for_token(self, token: str) -> ClassroomConfig | None:
        """The classroom a credential belongs to (a valid signed token, or a static config
        token when ``mixer.allow_static_tokens``); ``None`` if it is no valid credential."""
        if looks_signed(token):
            try:
                claims = verify_token(token, self._signing_keys, time.time())
            except AuthError as exc:
                logger.info("signed token refused: %s", exc.message)
                return None
            with contextlib.suppress(KeyError):
                return self.config.classroom(claims.classroom_id)
            return None
        if not self.config.mixer.allow_static_tokens:
            return None
        room = None
        for known, candidate in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                room = candidate
        return room

    def authenticate(self, classroom_id: str, token: str,
                     remote: str | None = None) -> ClassroomConfig:
        """The classroom whose credential this is; refuses unknown or mismatched ones.

        Failures are counted per ``remote`` address; an address over
        ``mixer.auth_failures_per_min`` is refused (``rate_limited``) without its
        credential being checked.
        """
        key = remote or "unknown"
        now = time.monotonic()
        if self.auth_failures.blocked(key, now):
            wait = self.auth_failures.retry_after_s(key, now)
            raise AuthError("rate_limited", f"too many failed attempts; retry in {wait:.0f} s")
        room = self.classroom_for_token(token)
        if room is None or room.id != classroom_id:
            self.auth_failures.allow(key, now)
            # Same answer for an unknown classroom and a wrong token: reveal nothing.
            raise AuthError("auth_failed", "unknown classroom or wrong credential")
        return room

    def check_join_rate(self, classroom_id: str) -> None:
        """Count a hello/offer of ``classroom_id``; refuse beyond ``mixer.joins_per_min``."""
        now = time.monotonic()
        if not self.joins.allow(classroom_id, now):
            wait = self.joins.retry_after_s(classroom_id, now)
            raise AuthError("rate_limited", f"too many joins; retry in {wait:.1f} s")

    # -- persistence --------------------------------------------------------------------------
    def restore_lessons(self) -> list[Lesson]:
        """Reload the live lessons a previous mixer process left (start of serving)."""
        restored = []
        for lesson in load_lessons(self.lessons_path, self.config):
            try:
                self.lessons.restore(lesson)
            except InvalidStateError as exc:  # load_lessons refuses such files already
                logger.error("lesson %s: not resumed: %s", lesson.lesson_id, exc)
                continue
            restored.append(lesson)
        return restored

    def _persist_lessons(self) -> None:
        try:
            save_lessons(self.lessons_path, self.lessons.live_lessons())
        except OSError as exc:
            logger.error("cannot persist lessons to %s: %s", self.lessons_path, exc)

    # -- lessons ------------------------------------------------------------------------------
    def _lesson_changed(self, lesson: Lesson) -> None:
        self._persist_lessons()
        if lesson.state == "live":
            media = LessonMedia(self.config, lesson, on_layout=self._layout_changed(lesson))
            self.media[lesson.lesson_id] = media
            for cb in self.on_media_created:
                cb(media)
            media.start()
            self.emit("lesson_started", lesson.lesson_id, lesson.main, lesson=lesson.info())
        else:
            self.emit("lesson_ended", lesson.lesson_id, lesson.main, lesson=lesson.info())
        self._background(self._announce(lesson))
        if lesson.state == "ended":
            self._background(self._teardown(lesson))

    def _layout_changed(self, lesson: Lesson) -> Callable[[str, Layout], None]:
        def on_layout(view_name: str, layout: Layout) -> None:
            media = self.media.get(lesson.lesson_id)
            if media is None:
                return
            for cid in lesson.classrooms:
                session = self.sessions.get(cid)
                if session and session.lesson_id == lesson.lesson_id and (
                    view_name in media.views_for(cid)
                ):
                    self._background(session.send(layout))

        return on_layout

    async def _announce(self, lesson: Lesson) -> None:
        msg = LessonState(lesson=lesson.info())
        # Side by side: a classroom that does not read holds up nobody else.
        await asyncio.gather(*(s.send(msg) for cid in lesson.classrooms
                               if (s := self.sessions.get(cid)) is not None))

    async def _teardown(self, lesson: Lesson) -> None:
        for cid in lesson.classrooms:
            session = self.sessions.get(cid)
            if session is not None and session.lesson_id == lesson.lesson_id:
                await self.leave(session, "lesson_ended")
        media = self.media.pop(lesson.lesson_id, None)
        if media is not None:
            for cb in self.on_media_closing:
                cb(media)
            await media.aclose()

    async def leave(self, session: ClassroomSession, reason: str) -> None:
        """Take a classroom out of its lesson's media (its tile shows a placeholder)."""
        pc, session.pc = session.pc, None
        lesson_id, session.lesson_id = session.lesson_id, None
        cid = session.classroom.id
        media = self.media.get(lesson_id) if lesson_id else None
        if media is not None:
            media.remove_classroom(cid)
        if session.joined:
            session.joined = False
            self.emit("classroom_left", lesson_id, cid, reason=reason)
        if pc is not None:
            try:
                await close_peer(pc)
            finally:
                self.peers.discard(pc)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg_done)

    def _bg_done(self, task: asyncio.Task[None]) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task failed", exc_info=task.exception())

    # -- media negotiation --------------------------------------------------------------------
    async def accept_offer(self, session: ClassroomSession, offer: Offer) -> str:
        """Answer a classroom's offer: receive its camera and mic, send its views and mix."""
        lesson = self.lessons.lesson_of(session.classroom.id)
        if lesson is None or lesson.state != "live":
            raise InvalidStateError("no live lesson for this classroom")
        self.check_join_rate(session.classroom.id)
        media = self.media[lesson.lesson_id]
        views = media.views_for(session.classroom.id)
        await self.leave(session, "renegotiated")
        pc = new_peer_connection()
        self.peers.add(pc)
        session.pc = pc
        session.lesson_id = lesson.lesson_id
        cid = session.classroom.id

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            clock = SenderClock(90000 if track.kind == "video" else 48000)
            videos = [t for t in pc.getTransceivers() if t.kind == "video"]
            source = cid
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track:
                    observe_sender_reports(transceiver.receiver, clock)
                    # The main classroom's second video is its courseware (双流).
                    if (track.kind == "video" and cid == lesson.main
                            and videos.index(transceiver) == 1):
                        source = COURSEWARE
            logger.info("classroom %s: receiving %s%s", cid, track.kind,
                        " (courseware)" if source == COURSEWARE else "")
            media.add_input(source, track, clock)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            logger.info("classroom %s: peer connection %s", cid, pc.connectionState)
            if session.pc is not pc:
                return
            if pc.connectionState == "connected" and not session.joined:
                session.joined = True
                self.emit("classroom_joined", lesson.lesson_id, cid)
            elif pc.connectionState in ("failed", "closed"):
                await self.leave(session, f"peer_{pc.connectionState}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:  # aiortc's SDP parser also raises AssertionError
            await self.leave(session, "bad_sdp")
            raise ProtocolError(
                "bad_sdp", f"cannot use this offer: {type(exc).__name__} {exc}".strip()
            ) from None
        if not pc.getTransceivers():
            await self.leave(session, "bad_sdp")
            raise ProtocolError("bad_sdp", "the offer has no audio or video section")
        view_sent = False
        for transceiver in pc.getTransceivers():
            # An agent offers one sendrecv video; a browser offers its camera sendonly and
            # the view recvonly: the view goes on the first video the classroom can receive
            # (and only it is narrowed to H.264; the camera keeps the codec it offered).
            may_send = transceiver._offerDirection in ("sendrecv", "sendonly")
            if transceiver.kind == "video" and views and may_send and not view_sent:
                view_sent = True
                prefer_codec(transceiver, "video/H264")
                track = media.subscribe_view(views[0], cid)
                transceiver.sender.replaceTrack(track)
                transceiver.direction = "sendrecv"
                route_keyframe_requests(
                    transceiver.sender,
                    functools.partial(media.request_keyframe, views[0], cid),
                )
                if self.config.media.adaptation.enabled:
                    # Its downlink estimate picks the rendition it gets (syncclass.adapt).
                    follow = functools.partial(media.downlink_feedback, views[0], cid)
                    observe_rtcp_feedback(transceiver.sender, follow)
                    if self.config.media.adaptation.estimator == "gcc":
                        observe_transport_estimate(transceiver.sender, follow)
            elif transceiver.kind == "audio":
                transceiver.sender.replaceTrack(media.audio_output(cid))
                transceiver.direction = "sendrecv"
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        if views and media.views[views[0]].last_layout is not None:
            self._background(session.send(media.views[views[0]].last_layout))
        return advertise_addresses(str(pc.localDescription.sdp), self.advertised_addresses)

    # -- shutdown -----------------------------------------------------------------------------
    async def aclose(self) -> None:
        for session in list(self.sessions.values()):
            await self.leave(session, "mixer_shutdown")
            with contextlib.suppress(Exception):  # bounded: a socket may not be reading
                await asyncio.wait_for(session.ws.close(), session.send_timeout_s)
        # Peers still closing (e.g. their classroom disconnected just now) are closed too:
        # an unclosed peer leaks its ICE sockets.
        for pc in list(self.peers):
            await close_peer(pc)
        self.peers.clear()
        for media in list(self.media.values()):
            await media.aclose()
        self.media.clear()
        for task in list(self._bg):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def classrooms_of(self, pairings: frozenset[str] | None) -> set[str] | None:
        """Classrooms of these pairings (``None``: every classroom)."""
        if pairings is None:
            return None
        return {c for p in self.config.pairings if p.id in pairings for c in (p.main, *p.receiving)}

    def status(self, pairings: frozenset[str] | None = None) -> dict[str, object]:
        """Lessons and connected classrooms, of ``pairings`` only when given."""
        rooms = self.classrooms_of(pairings)
        return {
            "county": self.config.county,
            "lessons": [lesson.info().model_dump() for lesson in self.lessons.all_lessons()
                        if pairings is None or lesson.pairing_id in pairings],
            "classrooms": {
                cid: {
                    "client": s.client,
                    "connected_ms": s.connected_ms,
                    "lesson_id": s.lesson_id,
                    "peer": s.pc.connectionState if s.pc else None,
                    "stats": s.stats,
                }
                for cid, s in self.sessions.items()
                if rooms is None or cid in rooms
            },
        }


MIXER_KEY = web.AppKey("mixer", Mixer)


def mixer_of(app: web.Application) -> Mixer:
    """The app's :class:`Mixer` (set by :func:`mixer.app.create_app`), for tests and tools;
    mixer modules get it passed in."""
    return app[MIXER_KEY]


async def reply_error(
    ws: web.WebSocketResponse, mixer: Mixer, code: ErrorCode, message: str, ref: str | None
) -> None:
    """Send an ``error`` message to a signaling socket (classroom or observer), counted in
    ``mixer.errors_sent``."""
    mixer.errors_sent += 1
    if not ws.closed:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(encode(Error(code=code, message=message, ref=ref)))
