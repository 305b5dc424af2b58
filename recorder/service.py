"""The ``syncclass recorder`` process: subscribe to the mixer, write, finalise, archive.

One :class:`Recorder` per process (``start()`` then ``aclose()``): it connects a ZeroMQ
XSUB socket to ``recorder.endpoint``, writes every lesson it hears of as segments
(:mod:`recorder.segments`), and when a lesson ends (or its mixer has been silent for
``idle_timeout_s``) builds the MP4, poster and metadata (:mod:`recorder.finalize`) and
queues them for the archive (:mod:`recorder.archive`). It reports progress, alerts and
``recording_ready`` back to the mixer on the same socket.

Restart: a lesson's folder and journal are its state. A recorder started mid-lesson picks
the lesson up from the next metadata message, salvages the segment the previous process
was writing, records it again whole from the mixer's replay when the replay reaches back
to its keyframe, and records the time it missed as a gap. A mixer restarted mid-lesson
starts a new media clock (``Header.t0``): the recording continues in new segments placed
after the old ones by the clocks' epoch difference, with a ``mixer_restart`` gap.
Unfinished lessons whose mixer is gone are finalised after ``idle_timeout_s``; spool jobs
are resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from syncclass.config import RecorderConfig
from syncclass.errors import RecordingError
from syncclass.private_files import private_dir, write_private
from syncclass.protocol import dumps_strict
from syncclass.recorder_wire import Header, LessonMeta, Report

from .archive import Job, Spool, Uploader, make_target
from .finalize import finalize_lesson
from .segments import DiskError, Journal, LessonRecording

logger = logging.getLogger(__name__)

ALERT_INTERVAL_S = 30.0
"""Repeated disk alerts for one lesson are at most this often (seconds)."""
DISK_RETRY_S = 5.0
"""After a write failure, wait this long before opening a new segment (seconds)."""
HEARTBEAT_S = 1.0
"""A ``hello`` report goes to the mixer this often (seconds): the mixer counts recorders by
who was heard from lately (a closed connection tells it no name)."""


@dataclass
class _Live:
    rec: LessonRecording | None
    meta: LessonMeta
    last_msg: float
    failed_until: float = 0.0
    last_alert: float = 0.0
    ending: bool = False
    synced: bool = True
    """A meta message of the lesson has come since this process (re)subscribed. Until
    then media is ignored: ZeroMQ delivers live messages before the mixer has read the new
    subscription and sent meta + replay, and those live messages (higher seq) would make
    the replay look like duplicates."""


class Recorder:
    def __init__(self, config: RecorderConfig, name: str | None = None,
                 endpoints: list[str] | None = None) -> None:
        self.cfg = config
        self.endpoints = endpoints or [config.endpoint]
        """Where the mixer publishes: ``recorder.endpoint``, one per media worker of a node
        (:func:`syncclass.workers.recorder_endpoints`), or every node's with several mixer
        nodes (a lesson resumed on another node continues in its folder); one XSUB
        connects to all."""
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.out = Path(config.out_dir)
        self.spool = Spool(Path(config.spool_dir))
        self.live: dict[str, _Live] = {}
        self.finished: dict[str, dict[str, Any]] = {}
        """Finalised lessons: lesson id → locations and checksums."""
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.uploader: Uploader | None = None
        self.messages = 0
        self.bad_messages = 0
        self.disk_errors = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            private_dir(self.out)  # created owner-only; each lesson folder is 0700
        except OSError as exc:
            raise RecordingError(f"cannot create recorder folder {self.out}: {exc}") from exc
        problem = self.cfg.bus_problem()
        if problem is not None:
            raise RecordingError(problem)
        sock = self._ctx.socket(zmq.XSUB)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        curve = self.cfg.curve
        if curve is not None:
            if curve.recorder_secret_key is None:
                sock.close(0)
                raise RecordingError("recorder.curve is set but recorder.curve."
                                     "recorder_secret_key is not: this recorder has no key "
                                     "(make one with 'syncclass recorder-keys')")
            secret = curve.recorder_secret_key.get_secret_value().encode()
            # The mixer's public key is pinned: only the holder of its secret can talk to us.
            sock.curve_secretkey = secret
            sock.curve_publickey = zmq.curve_public(secret)
            sock.curve_serverkey = curve.mixer_public_key.encode()
        for endpoint in self.endpoints:
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                sock.close(0)
                raise RecordingError(f"cannot connect to the mixer at {endpoint!r}: "
                                     f"{exc}") from exc
        await sock.send(b"\x01")  # subscribe to everything
        self._sock = sock
        self.uploader = Uploader(self.spool, make_target(self.cfg), self.cfg.retry_max_s,
                                 self._archived, self._upload_progress, self._upload_failed)
        self.uploader.start()
        self._resume_unfinished()
        self._main = asyncio.create_task(self._run(), name="recorder")
        await self._report("hello", None, endpoint=" ".join(self.endpoints))
        logger.info("recorder %s: listening to %s (%s), writing to %s, archive %s", self.name,
                    ", ".join(self.endpoints),
                    "CURVE" if curve is not None else "no keys: loopback only",
                    self.out, self.uploader.target.describe())

    async def aclose(self) -> None:
        """Stop receiving; finish open segments (lessons continue after a restart)."""
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        for lid, live in self.live.items():
            if live.rec is not None:
                with contextlib.suppress(DiskError):
                    live.rec._finish_segment()
                logger.info("lesson %s: recorder stopping; segments kept for resume", lid)
        for task in list(self._tasks):  # finalisations in progress
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 60)
        if self.uploader is not None:
            await self.uploader.aclose()
        if self._sock is not None:
            self._sock.close(linger=500)
        self._ctx.term()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resume_unfinished(self) -> None:
        """Lessons left unfinished by a previous run: wait for their mixer, else finalise."""
        for meta_path in sorted(self.out.glob("*/meta.json")):
            lesson_dir = meta_path.parent
            journal = Journal.load(lesson_dir / "journal.jsonl")
            if journal.finalized is not None:
                continue
            try:
                meta = LessonMeta.parse(meta_path.read_bytes())
            except (OSError, ValueError) as exc:
                logger.error("%s: unreadable, skipped: %s", meta_path, exc)
                continue
            logger.info("lesson %s: unfinished from a previous run; resuming", meta.lesson_id)
            live = self._open(meta, time.monotonic())
            if live is not None:
                live.synced = False  # wait for the mixer's meta, then its replay
            if live is not None and journal.end is not None:  # ended, never finalised
                live.ending = True
                self._spawn(self._finalize(live), f"finalize:{meta.lesson_id}")

    # -- receiving ----------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._sock is not None
        next_check = time.monotonic() + 1.0
        while True:
            if await self._sock.poll(timeout=250):
                frames = await self._sock.recv_multipart()
                self._handle(frames)
                # Drain what is already queued before the periodic checks.
                for _ in range(200):
                    if not await self._sock.poll(timeout=0):
                        break
                    self._handle(await self._sock.recv_multipart())
            now = time.monotonic()
            if now >= next_check:
                next_check = now + HEARTBEAT_S
                self._check_idle(now)
                await self._report("hello", None)

    def _handle(self, frames: list[bytes]) -> None:
        self.messages += 1
        if len(frames) != 2:
            self.bad_messages += 1
            return
        try:
            header = Header.parse(frames[0])
        except ValueError as exc:
            self.bad_messages += 1
            if self.bad_messages in (1, 10, 100) or self.bad_messages % 1000 == 0:
                logger.warning("recorder: bad message ignored (%d so far): %s",
                               self.bad_messages, exc)
            return
        payload = frames[1]
        now = time.monotonic()
        live = self.live.get(header.lesson)
        if live is None:
            if header.kind != "meta" or header.lesson in self.finished:
                return  # wait for the lesson's metadata (sent every second)
            try:
                meta = LessonMeta.parse(payload)
                if meta.lesson_id != header.lesson:
                    raise ValueError(f"lesson metadata is of lesson {meta.lesson_id!r}")
            except ValueError as exc:
                self.bad_messages += 1
                if self.bad_messages in (1, 10, 100) or self.bad_messages % 1000 == 0:
                    logger.warning("lesson %s: bad metadata ignored (%d bad message(s)): %s",
                                   header.lesson, self.bad_messages, exc)
                return
            live = self._open(meta, now)
            if live is None:
                return
        live.last_msg = now
        if live.ending:
            return
        if header.kind == "meta":
            if not live.synced:
                logger.info("lesson %s: the mixer's meta (next seq %d): taking its replay",
                            header.lesson, header.seq)
            live.synced = True
        elif header.kind in ("video", "audio") and not live.synced:
            return
        if header.kind == "end":
            try:
                end = json.loads(payload)
                reason, ended_ms = str(end["reason"]), int(end["ended_ms"])
            except (ValueError, KeyError, TypeError):
                reason, ended_ms = "lesson_ended", int(time.time() * 1000)
            self._end(header.lesson, reason, ended_ms)
            return
        if live.rec is None:
            if header.kind == "meta" and now >= live.failed_until:
                self._reopen(live)
            return
        rec = live.rec
        if header.kind in ("video", "audio"):
            if header.t0 and header.t0 != rec.clock:
                rec.stale += 1  # a restarted mixer's new clock: wait for its meta
                return
            # Media seq only: a meta message is sent before a replay of older media.
            if rec.last_seq is not None and header.seq <= rec.last_seq:
                rec.duplicates += 1  # replayed to another recorder that (re)connected
                return
            rec.note_seq(header.seq)
        try:
            if header.kind == "video":
                if live.failed_until and now < live.failed_until:
                    return
                live.failed_until = 0.0
                rec.video(payload, header.pts, header.key)
            elif header.kind == "audio":
                rec.audio(payload, header.pts)
            elif header.kind == "meta":
                with contextlib.suppress(ValueError):
                    update = LessonMeta.parse(payload)
                    if update.lesson_id == header.lesson:  # never another lesson's folder
                        rec.update_meta(update)
        except (DiskError, OSError) as exc:
            self._disk_failed(live, exc)

    def _open(self, meta: LessonMeta, now: float) -> _Live | None:
        live = _Live(None, meta, now)
        self.live[meta.lesson_id] = live
        self._reopen(live)
        return live

    def _reopen(self, live: _Live) -> None:
        try:
            live.rec = LessonRecording(self.out, live.meta, self.cfg.segment_s)
        except (DiskError, OSError) as exc:
            self._disk_failed(live, exc)
            return
        n = len(live.rec.journal.segments)
        logger.info("lesson %s: recording %s%s", live.meta.lesson_id, live.rec.dir,
                    f" (resuming after {n} segment(s))" if n else "")

    def _disk_failed(self, live: _Live, exc: BaseException) -> None:
        self.disk_errors += 1
        now = time.monotonic()
        live.failed_until = now + DISK_RETRY_S
        full = isinstance(exc, OSError) and (
            exc.errno == 28 or "No space left" in str(exc))
        what = "disk full" if full else "write failed"
        msg = f"lesson {live.meta.lesson_id}: recording {what}: {exc}"
        if live.rec is not None:
            live.rec.drop_open_segment("disk_full" if full else "disk_error")
            live.rec.record_error(msg)
        if now - live.last_alert >= ALERT_INTERVAL_S:
            live.last_alert = now
            logger.error("%s (the lesson goes on; retrying in %.0f s)", msg, DISK_RETRY_S)
            self._spawn(self._report("alert", live.meta.lesson_id,
                                     code="recording_disk_full" if full
                                     else "recording_write_failed",
                                     severity="error", message=msg), "alert")

    def _check_idle(self, now: float) -> None:
        for lid, live in list(self.live.items()):
            if not live.ending and now - live.last_msg > self.cfg.idle_timeout_s:
                logger.warning("lesson %s: no data from the mixer for %.0f s; finalising "
                               "what was recorded", lid, now - live.last_msg)
                self._end(lid, "mixer_lost")

    # -- ending -------------------------------------------------------------------------------
    def _end(self, lesson_id: str, reason: str, ended_ms: int | None = None) -> None:
        live = self.live.get(lesson_id)
        if live is None or live.ending:
            return
        live.ending = True
        if live.rec is not None:
            try:
                live.rec.close(reason, ended_ms)
            except (DiskError, OSError) as exc:
                self._disk_failed(live, exc)
        logger.info("lesson %s: ended (%s); finalising", lesson_id, reason)
        self._spawn(self._finalize(live), f"finalize:{lesson_id}")

    async def _finalize(self, live: _Live) -> None:
        lid = live.meta.lesson_id
        lesson_dir = self.out / lid
        last_pct = -1.0

        def progress(stage: str, pct: float) -> None:
            nonlocal last_pct
            if pct - last_pct >= 10 or pct >= 100:
                last_pct = pct
                logger.info("lesson %s: %s %3.0f%%", lid, stage, pct)
                self._spawn(self._report("progress", lid, stage=stage,
                                         percent=round(pct, 1)), "progress")

        try:
            meta = live.rec.meta if live.rec is not None else live.meta  # the lesson's t0
            result = await finalize_lesson(lesson_dir, meta, progress, self.name)
            job = self.spool.add(lid, result.files(), result.sha256)
            with (lesson_dir / "journal.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(dumps_strict({"t": "finalized", "mp4": str(result.mp4),
                                     "sha256": result.sha256}) + "\n")
        except (RecordingError, OSError) as exc:
            msg = f"lesson {lid}: cannot finalise the recording: {exc}"
            logger.error("%s", msg)
            await self._report("alert", lid, code="recording_finalise_failed",
                               severity="error", message=msg)
            self.live.pop(lid, None)
            return
        self.live.pop(lid, None)
        self.finished[lid] = {"mp4": str(result.mp4), "metadata": str(result.metadata),
                              "poster": str(result.poster) if result.poster else None,
                              "duration_s": result.duration_s, "sha256": result.sha256,
                              "spool_job": str(job.path)}
        logger.info("lesson %s: finalised %s (%.1f s); archiving", lid, result.mp4,
                    result.duration_s)
        assert self.uploader is not None
        self.uploader.wake()

    # -- archive callbacks --------------------------------------------------------------------
    def _archived(self, job: Job, where: dict[str, str]) -> None:
        info = self.finished.setdefault(job.lesson_id, {})
        info["archived"] = where
        local = self.out / job.lesson_id
        status = {"lesson_id": job.lesson_id, "archived": where,
                  "mp4": str(local / "lesson.mp4")}
        with contextlib.suppress(OSError):
            write_private(local / "archived.json", dumps_strict(status, indent=1))
        logger.info("lesson %s: recording ready: %s", job.lesson_id, where.get("lesson.mp4"))
        self._spawn(self._report("recording_ready", job.lesson_id, locations=where,
                                 mp4=where.get("lesson.mp4"),
                                 sha256={f.name: f.sha256 for f in job.files}), "ready")

    def _upload_progress(self, lesson_id: str, stage: str, pct: float) -> None:
        """Called from the uploader's worker thread."""
        logger.info("lesson %s: %s %3.0f%%", lesson_id, stage, pct)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._spawn(
                self._report("progress", lesson_id, stage=stage, percent=round(pct, 1)),
                "progress"))

    def _upload_failed(self, job: Job, message: str) -> None:
        self._spawn(self._report("alert", job.lesson_id, code="archive_unavailable",
                                 severity="warning", message=message), "alert")

    async def _report(self, kind: str, lesson: str | None, **data: Any) -> None:
        if self._sock is None:
            return
        report = Report(kind, self.name, lesson, data)  # type: ignore[arg-type]
        with contextlib.suppress(zmq.ZMQError):
            await self._sock.send(report.to_bytes(), flags=zmq.NOBLOCK)

    def status(self) -> dict[str, Any]:
        return {
            "recorder": self.name,
            "endpoint": " ".join(self.endpoints),
            "live": sorted(self.live),
            "finished": self.finished,
            "messages": self.messages,
            "bad_messages": self.bad_messages,
            "disk_errors": self.disk_errors,
            "spool": [j.lesson_id for j in self.spool.jobs()],
        }
