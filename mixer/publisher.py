"""Publishes each live lesson's recorded view and full audio mix to recorders (ZeroMQ).

The recorded view's packets are the very packets its encoder made for the classrooms (no
extra video encode); the full mix is encoded once to AAC here. Wire format and clock:
:mod:`recorder.wire`.

Back-pressure: the event loop only copies a packet's bytes and ``put_nowait``s it into a
bounded queue (``recorder.queue_size``); one publisher thread encodes audio and sends on
an XPUB socket with ``XPUB_NODROP`` and non-blocking sends. A full queue or a recorder
that does not keep up (its ZeroMQ high-water mark reached) drops messages, counted in
:meth:`RecordingPublisher.stats` and logged as warnings; after a dropped video packet the
rest of that GOP is dropped too (the recorder could not decode it) until the next
keyframe. Nothing here ever waits on a recorder. With no recorder connected while a lesson
is live, a warning and an ``alert`` event say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import zmq
from aiohttp import web

from recorder.wire import (
    AUDIO_RATE,
    ClassroomMeta,
    Header,
    LessonMeta,
    MessageKind,
    Report,
    adts_header,
)
from syncclass.config import CountyConfig
from syncclass.events import EventName

from .core import Mixer
from .guard import require_ops
from .media import LessonMedia

logger = logging.getLogger(__name__)

AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
AAC_BITRATE = 96_000
"""Bit/s of the recording's mono AAC-LC full mix."""
ABSENT_GRACE_S = 3.0
"""A live lesson with no recorder connected for this long raises an alert."""

Emit = Callable[..., None]


BATCH_S = 0.02
"""The publisher thread works in batches at most this often (s): the recorder is not
real-time. Against one wake-up per message this showed no CPU difference measurable under
load (benchmarks/recording.py, publisher thread ~0.95 s per 20 s of media either way)."""


@dataclass
class _LessonState:
    """Publisher-thread state of one lesson."""

    meta: LessonMeta
    seq: int = 0
    encoder: Any = None
    waiting_key: bool = True
    """Video is held back until a keyframe (at start and after a drop)."""
    last_meta_at: float = 0.0
    absent_since: float | None = None
    absent_alerted: bool = False
    recent: deque[tuple[bool, int, list[bytes]]] = field(default_factory=deque)
    """Recently sent (is_video_key, pts 1/90000 s, frames), for replay to a new recorder."""


@dataclass
class PublisherStats:
    sent: int = 0
    """Messages handed to ZeroMQ."""
    dropped_queue: int = 0
    """Messages dropped because the publisher thread's queue was full."""
    dropped_hwm: int = 0
    """Messages dropped because a recorder did not keep up (high-water mark)."""
    dropped_gop: int = 0
    """Video packets skipped after a drop, until the next keyframe."""
    replayed: int = 0
    """Messages resent to recorders that (re)connected."""
    audio_encode_ms: float = 0.0
    """Total AAC encode time, in milliseconds."""
    subscribers: int = 0
    reports: list[dict[str, Any]] = field(default_factory=list)
    """Recent recorder reports (bounded)."""


class RecordingPublisher:
    """One per mixer: ``start()`` (binds the endpoint) then ``aclose()``.

    ``emit(name, lesson_id, classroom_id, **data)`` puts events on the mixer's bus; it is
    always called on the event loop.
    """

    def __init__(self, config: CountyConfig, emit: Emit) -> None:
        self.config = config
        self.rc = config.recorder
        self._emit = emit
        self.view = next((n for n, v in config.views.items() if v.record), None)
        self.stats_ = PublisherStats()
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(self.rc.queue_size)
        self._thread: threading.Thread | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._media: dict[str, LessonMedia] = {}
        self._listeners: dict[str, tuple[Callable[[av.Packet], None],
                                         Callable[[av.AudioFrame], None]]] = {}
        self.ready: dict[str, dict[str, Any]] = {}
        """Lessons the recorder reported finished (``recording_ready`` data by lesson)."""
        self.error: str | None = None

    @property
    def active(self) -> bool:
        return self._thread is not None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the endpoint and start the publisher thread (call on the event loop).

        If recording is disabled, no view is recorded, or the endpoint cannot be bound, the
        mixer runs on without publishing (logged, and an ``alert`` event)."""
        self._loop = asyncio.get_running_loop()
        if not self.rc.enabled or self.view is None:
            logger.info("recording publisher off (%s)",
                        "disabled" if not self.rc.enabled else "no view has record: true")
            return
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)
        # Room for the live queue plus one replay of ``replay_s`` (at most ~100 messages/s).
        sock.setsockopt(zmq.SNDHWM, self.rc.queue_size + int(self.rc.replay_s * 100))
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscribe: count recorders
        try:
            sock.bind(self.rc.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            ctx.term()
            self.error = f"cannot bind recorder endpoint {self.rc.endpoint}: {exc}"
            logger.error("%s; lessons will NOT be recorded", self.error)
            self._emit("alert", None, None, kind="recording", state="firing",
                       code="recorder_endpoint", severity="error", message=self.error)
            return
        self._ctx, self._sock = ctx, sock
        self._thread = threading.Thread(target=self._run, name="recording-publisher",
                                        daemon=True)
        self._thread.start()
        logger.info("recording publisher: view %s on %s", self.view, self.rc.endpoint)

    async def aclose(self) -> None:
        """End every attached lesson's stream (reason ``mixer_shutdown``), stop the thread."""
        for lesson_id in list(self._media):
            self._put(("end", lesson_id, "mixer_shutdown"), force=True)
            self._media.pop(lesson_id, None)
        thread = self._thread
        if thread is None:
            return
        self._put(None, force=True)
        self._thread = None
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)
        if self._sock is not None:
            self._sock.close(0)
        if self._ctx is not None:
            self._ctx.term()

    # -- lesson media hooks (event loop) ------------------------------------------------------
    def attach(self, media: LessonMedia) -> None:
        """``Mixer.on_media_created``: publish this lesson's recorded view and full mix."""
        if not self.active or self.view is None or self.view not in media.views:
            return
        lesson_id = media.lesson.lesson_id
        meta = self._meta(media)
        view = self.view
        # Segments start at keyframes and must not exceed segment_s; the encoder's keyint
        # counts frames, so when composition runs below its nominal fps keyframes come late:
        # ask for one (the encoder merges requests closer than keyframe_min_interval_s).
        frame_ticks = round(90000 / media.media.fps)
        max_gop_ticks = round(self.rc.segment_s * 90000) - frame_ticks
        last_key_pts: list[int | None] = [None]

        def on_packet(packet: av.Packet) -> None:
            pts, key = int(packet.pts or 0), bool(packet.is_keyframe)
            if key:
                last_key_pts[0] = pts
            elif last_key_pts[0] is not None and pts - last_key_pts[0] >= max_gop_ticks:
                media.request_keyframe(view)
            self._put(("video", lesson_id, bytes(packet), pts, key))

        def on_mix(frame: av.AudioFrame) -> None:
            self._put(("audio", lesson_id, frame))

        media.packet_listeners[self.view].append(on_packet)
        media.full_mix_listeners.append(on_mix)
        self._media[lesson_id] = media
        self._listeners[lesson_id] = (on_packet, on_mix)
        self._put(("start", lesson_id, meta), force=True)
        media.request_keyframe(self.view)

    def detach(self, media: LessonMedia) -> None:
        """``Mixer.on_media_closing``: the lesson ended; tell the recorder."""
        lesson_id = media.lesson.lesson_id
        listeners = self._listeners.pop(lesson_id, None)
        if self._media.pop(lesson_id, None) is None or listeners is None:
            return
        on_packet, on_mix = listeners
        with contextlib.suppress(ValueError, KeyError):
            media.packet_listeners[self.view or ""].remove(on_packet)
        with contextlib.suppress(ValueError):
            media.full_mix_listeners.remove(on_mix)
        # The lesson's own end time, so the recording's metadata and the lesson report
        # agree (the send happens ~100 ms later, after the media closed).
        self._put(("end", lesson_id, "lesson_ended", media.lesson.ended_ms), force=True)

    def _meta(self, media: LessonMedia) -> LessonMeta:
        lesson = media.lesson
        rooms = []
        for cid in lesson.classrooms:
            room = self.config.classroom(cid)
            school = self.config.school(room.school)
            rooms.append(ClassroomMeta(room.id, room.name, room.role, school.id, school.name))
        return LessonMeta(
            lesson_id=lesson.lesson_id, pairing_id=lesson.pairing_id, subject=lesson.subject,
            grade=lesson.grade, teacher=lesson.teacher, timetable_id=lesson.timetable_id,
            started_ms=lesson.started_ms, t0_epoch_ms=media.t0_epoch_ms, view=self.view or "",
            width=media.media.width, height=media.media.height, fps=media.media.fps,
            classrooms=rooms, county=self.config.county,
        )

    def _put(self, item: tuple[Any, ...] | None, force: bool = False) -> None:
        if not self.active:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if force:  # control messages: make room by dropping the oldest media
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self._count_queue_drop()
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(item)
                return
            self._count_queue_drop()

    def _count_queue_drop(self) -> None:
        self.stats_.dropped_queue += 1
        n = self.stats_.dropped_queue
        if n in (1, 10, 100) or n % 1000 == 0:
            logger.warning("recording publisher: queue full (%d), %d message(s) dropped",
                           self.rc.queue_size, n)

    # -- publisher thread ---------------------------------------------------------------------
    def _run(self) -> None:
        lessons: dict[str, _LessonState] = {}
        stop = False
        while not stop:
            try:
                batch = [self._queue.get(timeout=0.05)]
            except queue.Empty:
                batch = [("idle",)]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    batch.append(self._queue.get_nowait())
            for item in batch:
                if item is None:
                    stop = True
                    break
                try:
                    self._handle(item, lessons)
                except Exception:  # the publisher must outlive any one bad message
                    logger.exception("recording publisher: failed on %s", item[0])
            try:
                self._read_upstream(lessons)
                self._periodic(lessons)
            except Exception:
                logger.exception("recording publisher: upstream/periodic work failed")
            if not stop:
                time.sleep(BATCH_S)  # let the next batch gather
        for state in lessons.values():
            self._close_encoder(state)

    def _handle(self, item: tuple[Any, ...], lessons: dict[str, _LessonState]) -> None:
        kind = item[0]
        if kind == "idle":
            return
        lesson_id = item[1]
        if kind == "start":
            state = _LessonState(meta=item[2])
            lessons[lesson_id] = state
            self._send_meta(state)
            return
        state_or_none = lessons.get(lesson_id)
        if state_or_none is None:
            return
        state = state_or_none
        if kind == "video":
            _, _, payload, pts, key = item
            if state.waiting_key:
                if not key:
                    self.stats_.dropped_gop += 1
                    return
                state.waiting_key = False
            if not self._send(state, "video", payload, pts, key):
                state.waiting_key = True
        elif kind == "audio":
            self._send_audio(state, item[2])
        elif kind == "end":
            ended_ms = item[3] if len(item) > 3 and item[3] else int(time.time() * 1000)
            end = {"reason": item[2], "ended_ms": ended_ms}
            self._send(state, "end", json.dumps(end).encode(), 0, False, block=True)
            self._close_encoder(state)
            del lessons[lesson_id]

    def _send_audio(self, state: _LessonState, frame: av.AudioFrame) -> None:
        start = time.perf_counter()
        if state.encoder is None:
            codec = av.CodecContext.create("aac", "w")
            codec.sample_rate = AUDIO_RATE
            codec.layout = "mono"
            codec.format = "fltp"
            codec.bit_rate = AAC_BITRATE
            codec.time_base = AUDIO_TIME_BASE
            # FFmpeg's "fast" AAC coder: 0.23 vs 0.41 ms per 20 ms frame (default
            # "twoloop"), same bitrate; speech and tones need no better.
            codec.options = {"aac_coder": "fast"}
            codec.open()
            state.encoder = codec
        packets = state.encoder.encode(frame)
        self.stats_.audio_encode_ms += (time.perf_counter() - start) * 1000.0
        for packet in packets:
            raw = bytes(packet)
            self._send(state, "audio", adts_header(len(raw)) + raw, int(packet.pts or 0), False)

    def _close_encoder(self, state: _LessonState) -> None:
        if state.encoder is not None:
            with contextlib.suppress(av.error.FFmpegError):
                state.encoder.encode(None)
            state.encoder = None

    def _send_meta(self, state: _LessonState) -> None:
        state.last_meta_at = time.monotonic()
        self._send(state, "meta", state.meta.to_bytes(), 0, False, block=True)

    def _send(self, state: _LessonState, kind: MessageKind, payload: bytes, pts: int,
              key: bool, block: bool = False) -> bool:
        assert self._sock is not None
        header = Header(kind, state.meta.lesson_id, state.seq, pts, key,
                        int(state.meta.t0_epoch_ms)).to_bytes()
        if kind in ("video", "audio"):  # control messages carry the next media seq
            state.seq += 1
        frames = [header, payload]
        if kind in ("video", "audio") and self.rc.replay_s > 0:
            vpts = pts if kind == "video" else pts * 90000 // AUDIO_RATE
            state.recent.append((kind == "video" and key, vpts, frames))
            horizon = vpts - round(self.rc.replay_s * 90000)
            while state.recent and state.recent[0][1] < horizon:
                state.recent.popleft()
        try:
            if block:  # control messages may wait briefly (this thread, not the loop)
                if not self._sock.poll(200, zmq.POLLOUT):
                    raise zmq.Again()
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.stats_.dropped_hwm += 1
            n = self.stats_.dropped_hwm
            if n in (1, 10, 100) or n % 1000 == 0:
                logger.warning("lesson %s: recorder not keeping up, %d message(s) dropped",
                               state.meta.lesson_id, n)
            return False
        self.stats_.sent += 1
        return True

    def _read_upstream(self, lessons: dict[str, _LessonState]) -> None:
        assert self._sock is not None
        while self._sock.poll(0, zmq.POLLIN):
            data = self._sock.recv(zmq.NOBLOCK)
            if data[:1] == b"\x01":
                self.stats_.subscribers += 1
                logger.info("recording publisher: a recorder subscribed (%d connected)",
                            self.stats_.subscribers)
                for state in lessons.values():  # a (re)started recorder: let it start now
                    state.absent_since = None
                    self._send_meta(state)
                    self._replay(state)
                    self._call(self._request_keyframe, state.meta.lesson_id)
            elif data[:1] == b"\x00":
                self.stats_.subscribers = max(0, self.stats_.subscribers - 1)
                logger.warning("recording publisher: a recorder left (%d connected)",
                               self.stats_.subscribers)
            else:
                try:
                    report = Report.parse(data)
                except ValueError as exc:
                    logger.warning("recording publisher: bad report from a recorder: %s", exc)
                    continue
                self._call(self._on_report, report)

    def _replay(self, state: _LessonState) -> None:
        """Resend the kept recent stream from its oldest keyframe (recorders drop what they
        already have by ``seq``)."""
        start = next((i for i, (key, _, _) in enumerate(state.recent) if key), None)
        if start is None:
            return
        sent = 0
        for i, (_, _, frames) in enumerate(state.recent):
            if i < start:
                continue
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK)  # type: ignore[union-attr]
            except zmq.Again:
                self.stats_.dropped_hwm += 1
                break
            sent += 1
        self.stats_.replayed += sent
        logger.info("lesson %s: replayed %d recent message(s) to a new recorder",
                    state.meta.lesson_id, sent)

    def _periodic(self, lessons: dict[str, _LessonState]) -> None:
        now = time.monotonic()
        for state in lessons.values():
            if now - state.last_meta_at >= self.rc.meta_interval_s:
                self._send_meta(state)
            if self.stats_.subscribers > 0:
                state.absent_since = None
                state.absent_alerted = False
                continue
            if state.absent_since is None:
                state.absent_since = now
            elif not state.absent_alerted and now - state.absent_since >= ABSENT_GRACE_S:
                state.absent_alerted = True
                msg = (f"no recorder connected to {self.rc.endpoint}: lesson "
                       f"{state.meta.lesson_id} is not being recorded")
                logger.warning("%s", msg)
                self._call(self._alert, state.meta.lesson_id, "recorder_absent", msg)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    # -- event loop side ----------------------------------------------------------------------
    def _request_keyframe(self, lesson_id: str) -> None:
        media = self._media.get(lesson_id)
        if media is not None and self.view is not None:
            media.request_keyframe(self.view)

    def _alert(self, lesson_id: str | None, code: str, message: str) -> None:
        self._emit("alert", lesson_id, None, kind="recording", state="firing", code=code,
                   severity="warning", message=message)

    def _on_report(self, report: Report) -> None:
        entry = {"kind": report.kind, "recorder": report.recorder, "lesson": report.lesson,
                 "data": report.data, "ts_ms": int(time.time() * 1000)}
        self.stats_.reports.append(entry)
        del self.stats_.reports[:-50]
        name: EventName | None = None
        if report.kind == "recording_ready" and report.lesson:
            self.ready[report.lesson] = report.data
            name = "recording_ready"
        elif report.kind == "alert":
            name = "alert"
        if name is not None:
            data = {k: v for k, v in report.data.items()
                    if k not in ("name", "lesson_id", "classroom_id", "recorder")}
            if name == "alert":  # the same shape as the ops alerts (mixer.alerts)
                data.setdefault("kind", "recording")
                data.setdefault("state", "firing")
            self._emit(name, report.lesson, None, recorder=report.recorder, **data)

    def summary(self) -> dict[str, Any]:
        """The recorder's state in brief, for the ops dashboard: ``state`` (``recording``,
        ``idle``, ``no recorder``, ``error``, ``off``), connected recorders, dropped messages
        and, per lesson being finalised or uploaded, its latest progress."""
        s = self.stats_
        if not self.active:
            state = "error" if self.error else "off"
        elif s.subscribers == 0:
            state = "no recorder"
        else:
            state = "recording" if self._media else "idle"
        progress: dict[str, str] = {}
        for report in s.reports:
            lesson = report.get("lesson")
            if report["kind"] == "progress" and lesson and lesson not in self.ready:
                data = report["data"]
                progress[lesson] = f"{data.get('stage', '?')} {data.get('percent', 0):.0f}%"
        return {"state": state, "recorders": s.subscribers,
                "dropped": s.dropped_queue + s.dropped_hwm + s.dropped_gop,
                "progress": progress, "ready": len(self.ready)}

    def stats(self) -> dict[str, Any]:
        s = self.stats_
        return {
            "active": self.active,
            "endpoint": self.rc.endpoint,
            "view": self.view,
            "error": self.error,
            "recorders_connected": s.subscribers,
            "sent": s.sent,
            "dropped_queue": s.dropped_queue,
            "dropped_hwm": s.dropped_hwm,
            "dropped_gop": s.dropped_gop,
            "replayed": s.replayed,
            "audio_encode_ms": round(s.audio_encode_ms, 1),
            "queued": self._queue.qsize(),
            "lessons": sorted(self._media),
            "ready": self.ready,
            "reports": s.reports[-20:],
        }


PUBLISHER_KEY = web.AppKey("recording_publisher", RecordingPublisher)


def setup_recording(app: web.Application, mixer: Mixer) -> RecordingPublisher:
    """Attach the publisher to the mixer's aiohttp app: media hooks, lifecycle, and
    ``GET /api/recorder`` (publisher counters, connected recorders, their reports; ops
    only: dashboard session or ``ops.api_token``)."""
    publisher = RecordingPublisher(mixer.config, mixer.emit)
    app[PUBLISHER_KEY] = publisher
    mixer.on_media_created.append(publisher.attach)
    mixer.on_media_closing.append(publisher.detach)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        publisher.start()
        yield
        await publisher.aclose()

    async def recorder_status(request: web.Request) -> web.Response:
        require_ops(request)  # recording paths and reports: ops only
        return web.json_response(request.app[PUBLISHER_KEY].stats(),
                                 headers={"Cache-Control": "no-store"})

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/api/recorder", recorder_status)
    return publisher
