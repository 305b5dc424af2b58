"""Observers (教研员): watch a pairing's live lesson from a browser and write comments.

An observer connects to ``/ws`` with ``observer_hello`` (their id and credential from the
config's ``observers``). They may watch only the pairings listed for them. While the
lesson is live they offer a receive-only peer connection and get the lesson's
``students_view`` (the same encoded packets the receiving classrooms get: no extra encode)
and the full audio mix; an offer that would send media is refused. A ``comment`` is
stamped by the mixer (lesson-relative ms and epoch ms), stored in the lesson's
``comments.jsonl``, emitted as a ``comment_added`` event and sent to the lesson's
observers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import av
from aiohttp import WSMsgType, web
from aiortc import RTCPeerConnection, RTCSessionDescription

from syncclass.config import ObserverConfig
from syncclass.errors import AuthError, InvalidStateError, ProtocolError
from syncclass.events import Event
from syncclass.lesson import Lesson
from syncclass.protocol import (
    Answer,
    Comment,
    CommentRecord,
    Layout,
    Leave,
    LessonInfo,
    LessonState,
    ObserverHello,
    ObserverWelcome,
    Offer,
    Ping,
    Pong,
    Stats,
    encode,
    parse_client_message,
)
from syncclass.rtc import (
    PacketQueueTrack,
    new_peer_connection,
    prefer_codec,
    route_keyframe_requests,
)

from .comments import CommentStore
from .core import Mixer, now_ms, reply_error
from .guard import bounded_send
from .media import LessonMedia

logger = logging.getLogger(__name__)

LAYOUT_POLL_S = 0.5
"""How often an observer's layout is checked for changes, s."""


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Done callback of a task nobody awaits any more: take its outcome so asyncio does not
    report it as never retrieved."""
    if not task.cancelled():
        task.exception()


def observer_view(media: LessonMedia) -> str:
    """The view observers watch: ``students_view``, else the recorded one, else the first
    view shown to receiving classrooms."""
    if "students_view" in media.views:
        return "students_view"
    for name, view in media.views.items():
        if view.config.record:
            return name
    for name, view in media.views.items():
        if view.config.shown_to == "receiving":
            return name
    return next(iter(media.views))


def media_key(observer_id: str) -> str:
    """The observer's subscriber key in a lesson's media (never a classroom id: ':')."""
    return f"observer:{observer_id}"


@dataclass
class ObserverSession:
    observer: ObserverConfig
    ws: web.WebSocketResponse
    pairing_id: str
    client: str
    pc: RTCPeerConnection | None = None
    lesson_id: str | None = None
    audio: PacketQueueTrack | None = None
    mix_listener: Callable[[av.AudioFrame], None] | None = None
    layout_task: asyncio.Task[None] | None = None
    stats: dict[str, object] = field(default_factory=dict)
    connected_ms: int = field(default_factory=now_ms)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    transport: asyncio.Transport | None = None
    send_timeout_s: float = 5.0

    async def send(self, message: object) -> None:
        """Send a message; an observer that does not read within ``send_timeout_s`` is
        disconnected (see :func:`mixer.guard.bounded_send`)."""
        if self.ws.closed:
            return
        async with self.send_lock:
            await bounded_send(self.ws, encode(message),  # type: ignore[arg-type]
                               self.send_timeout_s, self.transport,
                               f"observer {self.observer.id}")


def _copy_audio(frame: av.AudioFrame) -> av.AudioFrame:
    # The full mix frame is shared with the recorder; each consumer gets its own object.
    out = av.AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name,
                                     layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    out.pts = frame.pts
    out.time_base = frame.time_base
    return out


class ObserverHub:
    """Every observer connection of one mixer: auth, media, comments. ``aclose()`` ends it."""

    def __init__(self, mixer: Mixer, store: CommentStore) -> None:
        self.mixer = mixer
        self.store = store
        self.sessions: dict[str, ObserverSession] = {}
        self._tokens = {o.token: o for o in mixer.config.observers}
        self._bg: set[asyncio.Task[None]] = set()
        mixer.events.subscribe(self._on_event)

    # -- auth -------------------------------------------------------------------------------
    def authenticate(self, observer_id: str, token: str) -> ObserverConfig:
        found = None
        for known, candidate in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = candidate
        if found is None or found.id != observer_id:
            raise AuthError("auth_failed", "unknown observer or wrong credential")
        return found

    def observer_for_token(self, token: str) -> ObserverConfig | None:
        found = None
        for known, candidate in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = candidate
        return found

    def current_lesson(self, pairing_id: str) -> Lesson | None:
        return self.mixer.lessons.lesson_of(self.mixer.config.pairing(pairing_id).main)

    # -- lesson changes ---------------------------------------------------------------------
    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _on_event(self, event: Event) -> None:
        if event.name not in ("lesson_started", "lesson_ended"):
            return
        info = event.data.get("lesson")
        if not isinstance(info, LessonInfo):
            return
        self._background(self._announce(info))

    async def _announce(self, info: LessonInfo) -> None:
        for session in list(self.sessions.values()):
            if session.pairing_id != info.pairing_id:
                continue
            if info.state != "live" and session.lesson_id == info.lesson_id:
                await self.leave(session, "lesson_ended")
            await session.send(LessonState(lesson=info))

    # -- media ------------------------------------------------------------------------------
    async def accept_offer(self, session: ObserverSession, offer: Offer) -> str:
        """Answer a receive-only offer with the observed view and the full mix."""
        lesson = self.current_lesson(session.pairing_id)
        if lesson is None or lesson.state != "live":
            raise InvalidStateError("no live lesson to observe")
        media = self.mixer.media[lesson.lesson_id]
        view = observer_view(media)
        await self.leave(session, "renegotiated")
        pc = new_peer_connection()
        session.pc = pc
        session.lesson_id = lesson.lesson_id
        oid = session.observer.id
        key = media_key(oid)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            logger.info("observer %s: peer connection %s", oid, pc.connectionState)
            if session.pc is pc and pc.connectionState in ("failed", "closed"):
                await self.leave(session, f"peer_{pc.connectionState}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:  # aiortc's SDP parser also raises AssertionError
            await self.leave(session, "bad_sdp")
            raise ProtocolError(
                "bad_sdp", f"cannot use this offer: {type(exc).__name__} {exc}".strip()
            ) from None
        transceivers = pc.getTransceivers()
        sending = [t.kind for t in transceivers if t._offerDirection in ("sendrecv", "recvonly")]
        if sending:
            await self.leave(session, "observer_sends_media")
            raise AuthError("not_allowed",
                            f"an observer sends no media; offer {'/'.join(sending)} as recvonly")
        if not transceivers:
            await self.leave(session, "bad_sdp")
            raise ProtocolError("bad_sdp", "the offer has no audio or video section")
        video_done = audio_done = False
        try:
            for transceiver in transceivers:
                if transceiver.kind == "video" and not video_done:
                    video_done = True
                    prefer_codec(transceiver, "video/H264")
                    transceiver.sender.replaceTrack(media.subscribe_view(view, key))
                    transceiver.direction = "sendonly"
                    route_keyframe_requests(
                        transceiver.sender, functools.partial(media.request_keyframe, view)
                    )
                elif transceiver.kind == "audio" and not audio_done:
                    audio_done = True
                    track = PacketQueueTrack("audio", maxsize=10, name=f"fullmix->{key}")

                    def listener(frame: av.AudioFrame, track: PacketQueueTrack = track) -> None:
                        track.put(_copy_audio(frame))

                    session.audio, session.mix_listener = track, listener
                    media.full_mix_listeners.append(listener)
                    transceiver.sender.replaceTrack(track)
                    transceiver.direction = "sendonly"
                else:
                    transceiver.direction = "inactive"
        except ProtocolError:
            await self.leave(session, "bad_sdp")
            raise
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        session.layout_task = asyncio.ensure_future(self._layout_loop(session, media, view))
        logger.info("observer %s: watching %s of lesson %s", oid, view, lesson.lesson_id)
        return str(pc.localDescription.sdp)

    async def _layout_loop(self, session: ObserverSession, media: LessonMedia,
                           view: str) -> None:
        sent: Layout | None = None
        while True:
            layout = media.views[view].last_layout
            if layout is not None and layout != sent:
                await session.send(layout)
                sent = layout
            await asyncio.sleep(LAYOUT_POLL_S)

    async def leave(self, session: ObserverSession, reason: str) -> None:
        """Stop the observer's media (its signaling connection stays)."""
        pc, session.pc = session.pc, None
        lesson_id, session.lesson_id = session.lesson_id, None
        task, session.layout_task = session.layout_task, None
        if task is not None:
            # Not awaited: it only sends layouts, and nothing below may wait on a send or
            # be skipped if the caller (a closing socket's handler) is cancelled meanwhile.
            task.cancel()
            task.add_done_callback(_retrieve)
        media = self.mixer.media.get(lesson_id) if lesson_id else None
        key = media_key(session.observer.id)
        if media is not None:
            for view in media.views.values():
                track = view.subscribers.pop(key, None)
                if track is not None:
                    track.stop()
            if session.mix_listener in media.full_mix_listeners:
                media.full_mix_listeners.remove(session.mix_listener)
        if session.audio is not None:
            session.audio.stop()
        session.audio = session.mix_listener = None
        if pc is not None:
            logger.info("observer %s: left lesson %s (%s)", session.observer.id, lesson_id,
                        reason)
            await pc.close()

    # -- comments ---------------------------------------------------------------------------
    async def add_comment(self, session: ObserverSession, text: str) -> CommentRecord:
        lesson = self.current_lesson(session.pairing_id)
        if lesson is None or lesson.state != "live" or lesson.started_ms is None:
            raise InvalidStateError("comments are taken while the lesson is live")
        epoch = now_ms()
        record = await self.store.add({
            "lesson_id": lesson.lesson_id,
            "pairing_id": lesson.pairing_id,
            "observer_id": session.observer.id,
            "author": session.observer.name,
            "text": text,
            "lesson_ms": max(0, epoch - lesson.started_ms),
            "epoch_ms": epoch,
        })
        self.mixer.emit("comment_added", lesson.lesson_id, None,
                        observer_id=session.observer.id,
                        comment=record.model_dump(exclude={"type"}))
        await asyncio.gather(*(other.send(record) for other in list(self.sessions.values())
                               if other.pairing_id == lesson.pairing_id))
        return record

    # -- lifecycle --------------------------------------------------------------------------
    async def aclose(self) -> None:
        self.mixer.events.unsubscribe(self._on_event)
        for session in list(self.sessions.values()):
            await self.leave(session, "mixer_shutdown")
            with contextlib.suppress(Exception):
                await session.ws.close()
        for task in list(self._bg):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> dict[str, object]:
        return {
            oid: {
                "client": s.client,
                "pairing_id": s.pairing_id,
                "connected_ms": s.connected_ms,
                "lesson_id": s.lesson_id,
                "peer": s.pc.connectionState if s.pc else None,
                "stats": s.stats,
            }
            for oid, s in self.sessions.items()
        }


OBSERVERS_KEY = web.AppKey("observers", ObserverHub)


async def _open(hub: ObserverHub, ws: web.WebSocketResponse,
                hello: ObserverHello) -> ObserverSession:
    observer = hub.authenticate(hello.observer_id, hello.token)
    pairing_id = hello.pairing_id or observer.pairings[0]
    if pairing_id not in observer.pairings:
        raise AuthError("not_paired", f"observer {observer.id!r} may not watch {pairing_id!r}")
    previous = hub.sessions.get(observer.id)
    if previous is not None:
        logger.info("observer %s: replacing previous connection", observer.id)
        await hub.leave(previous, "replaced")
        with contextlib.suppress(Exception):
            await previous.ws.close()
    session = ObserverSession(observer=observer, ws=ws, pairing_id=pairing_id,
                              client=hello.client)
    hub.sessions[observer.id] = session
    lesson = hub.current_lesson(pairing_id)
    media = hub.mixer.media.get(lesson.lesson_id) if lesson else None
    await session.send(ObserverWelcome(
        observer_id=observer.id,
        name=observer.name,
        pairing_id=pairing_id,
        view=observer_view(media) if media else "students_view",
        lesson=lesson.info() if lesson else None,
        server_time_ms=now_ms(),
    ))
    logger.info("observer %s: authenticated (%s), watching pairing %s", observer.id,
                hello.client, pairing_id)
    return session


async def serve_observer(hub: ObserverHub, request: web.Request, ws: web.WebSocketResponse,
                         hello: ObserverHello) -> None:
    """Run an observer's signaling connection after its ``observer_hello``, until it closes.

    Raises :class:`AuthError` (before anything else) if the credential is refused.
    """
    mixer = hub.mixer
    session = await _open(hub, ws, hello)
    session.transport = request.transport
    session.send_timeout_s = mixer.config.mixer.send_timeout_s
    limit = mixer.config.mixer.max_message_bytes
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            ref: str | None = None
            try:
                message = parse_client_message(msg.data, limit)
                ref = message.type
                if isinstance(message, Offer):
                    sdp = await hub.accept_offer(session, message)
                    await session.send(Answer(sdp=sdp))
                elif isinstance(message, Comment):
                    await hub.add_comment(session, message.text)
                elif isinstance(message, Stats):
                    session.stats = message.model_dump(exclude={"type"})
                elif isinstance(message, Ping):
                    await session.send(Pong(id=message.id, server_time_ms=now_ms()))
                elif isinstance(message, Leave):
                    await hub.leave(session, "leave")
                elif isinstance(message, ObserverHello):
                    raise AuthError("already_authenticated",
                                    "this connection is already authenticated")
                else:
                    raise AuthError("not_allowed", f"an observer may not send {ref!r}")
            except (ProtocolError, AuthError) as exc:
                await reply_error(ws, mixer, exc.code, exc.message, ref)  # type: ignore[arg-type]
            except InvalidStateError as exc:
                await reply_error(ws, mixer, "no_lesson", str(exc), ref)
            except Exception:  # one observer's failure must not end its connection
                logger.exception("observer %s: error handling %s", session.observer.id, ref)
                await reply_error(ws, mixer, "internal", "internal error; see mixer log", ref)
    finally:
        if hub.sessions.get(session.observer.id) is session:
            del hub.sessions[session.observer.id]
        await hub.leave(session, "disconnected")
        logger.info("observer %s: disconnected", session.observer.id)
