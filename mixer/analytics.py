"""Analytics of live lessons in the mixer: taps, lifecycle, report at lesson end.

:class:`Analytics` subscribes to the mixer's event bus (joins, leaves, hand raises,
lesson start/end, recording ready) and taps every lesson's decoded media:

- audio: each classroom's 20 ms int16 blocks go through WebRTC's VAD (``webrtcvad``,
  the maintained ``webrtcvad-wheels`` build) and a :class:`~syncclass.analytics.VadSmoother`
  (hangover) into speech segments, on the event loop (≈ 30 µs per block);
- video: every ``head_count_interval_s`` one frame per classroom is handed to a worker
  thread that counts faces (:mod:`mixer.headcount`);
- network: samples of :class:`mixer.netstats.NetStatsCollector` (the app's, else one this
  module owns), kept every ``network_interval_s``.

When a lesson ends the report is built and written off the loop (JSON, CSV, page) into
``<data_dir>/reports/<lesson_id>/`` and beside the recording once ``recording_ready``
names its folder, its rows go to the database, and ``report_ready`` is emitted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import webrtcvad  # type: ignore[import-untyped]
from aiohttp import web

from syncclass.analytics.attendance import AttendanceSession, AttendanceTracker
from syncclass.analytics.checkpoint import AnalyticsCheckpoint, Gap
from syncclass.analytics.speech import VadSmoother
from syncclass.config import CountyConfig, RecorderConfig, is_lesson_id
from syncclass.directing import COURSEWARE
from syncclass.errors import AuthError, ConfigError, InvalidStateError
from syncclass.events import Event
from syncclass.httperrors import json_error, json_object_body
from syncclass.lesson import Lesson
from syncclass.protocol import dumps_strict

from .core import Mixer
from .guard import REPORT_COOKIE, issue_report_grant, reader_of, report_grant_valid
from .headcount import HeadCounter
from .media import LessonMedia
from .memory import release_free_memory
from .netstats import ClassroomHealth, MixerHealth, NetStatsCollector
from .report import REPORT_FILES, LessonData, build_report, db_rows, write_report
from .store import ReportStore

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
FRAME_MS = 20
KEEP_FINISHED = 20
"""Finished lessons kept in memory (older ones are read back from their report folder)."""


def now_ms() -> int:
    return int(time.time() * 1000)


class SiteVoice:
    """Voice activity of one classroom's decoded audio on the epoch clock.

    Blocks are placed by their RTP-derived pts (sample-accurate, gaps kept) from an anchor
    on the epoch clock: the arrival time of a block minus its duration, moved earlier
    whenever a block arrives earlier than the anchor predicts, so the anchor converges to
    the least-delayed arrival (capture time plus the smallest network delay) and late,
    bursty delivery on a busy mixer does not stretch or shift speech."""

    def __init__(self, mode: int, hangover_ms: int) -> None:
        self.vad = webrtcvad.Vad(mode)
        self.smoother = VadSmoother(FRAME_MS, hangover_ms=hangover_ms)
        self._anchor_ms: float | None = None
        self._pts0 = 0
        self._next_pts = 0
        self.frames = 0
        self.voiced_frames = 0

    def push(self, block: np.ndarray, arrival_ms: int, pts: int | None = None) -> None:
        """One block (int16 mono 48 kHz, a multiple of 20 ms) that arrived at
        ``arrival_ms``; ``pts`` in 48 kHz units (``None``: assume contiguous)."""
        n = len(block)
        if pts is None:
            pts = self._next_pts
        start_ms = arrival_ms - n * 1000 / SAMPLE_RATE
        if self._anchor_ms is None or not 0 <= pts - self._next_pts < 60 * SAMPLE_RATE:
            # First block, or the sender's timeline restarted: anchor anew.
            self._anchor_ms, self._pts0 = start_ms, pts
        predicted = self._anchor_ms + (pts - self._pts0) * 1000 / SAMPLE_RATE
        if start_ms < predicted:
            self._anchor_ms -= predicted - start_ms
            predicted = start_ms
        self._next_pts = pts + n
        step = SAMPLE_RATE * FRAME_MS // 1000
        for i in range(0, n - step + 1, step):
            frame = block[i : i + step]
            voiced = self.vad.is_speech(frame.tobytes(), SAMPLE_RATE)
            self.frames += 1
            self.voiced_frames += voiced
            self.smoother.push(round(predicted + i * 1000 / SAMPLE_RATE), voiced)

    def gap(self) -> None:
        """The input stopped (the classroom left): close any open segment."""
        self.smoother.flush()
        self._anchor_ms = None


@dataclass
class LessonAnalytics:
    """What is being observed of one live lesson."""

    lesson: Lesson
    attendance: AttendanceTracker = field(default_factory=AttendanceTracker)
    voices: dict[str, SiteVoice] = field(default_factory=dict)
    hands: dict[str, list[int]] = field(default_factory=dict)
    heads: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    network: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    contacts: dict[str, int] = field(default_factory=dict)
    """Per classroom, epoch ms of its agent's first contact (``hello``) for this lesson:
    of the connection open when the lesson started, else the first during it."""
    next_head_s: dict[str, float] = field(default_factory=dict)
    head_pending: set[str] = field(default_factory=set)
    last_network_ms: int = 0
    media: LessonMedia | None = None
    report_paths: dict[str, str] | None = None
    recording_dir: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    gaps: list[Gap] = field(default_factory=list)
    """Fail-overs of the lesson (a node holding it died): what the analytics missed."""
    prior_directing: list[dict[str, Any]] = field(default_factory=list)
    """Directing switches of the nodes that held the lesson before (from checkpoints)."""
    thinned: int = 0
    """Network samples of the part before a fail-over dropped to bound its checkpoint."""

    def release(self) -> None:
        """Drop the lesson's media and analytics state once its report is written: a
        finished lesson keeps only its lesson, report paths and recording folder (the
        media pipeline alone held ~33 MB per 720p lesson)."""
        self.media = None
        self.attendance = AttendanceTracker()
        self.voices.clear()
        self.hands.clear()
        self.heads.clear()
        self.network.clear()
        self.next_head_s.clear()
        self.prior_directing.clear()

    def data(self) -> LessonData:
        return LessonData(
            lesson=self.lesson,
            sessions=dict(self.attendance.sessions),
            speech={cid: list(v.smoother.segments) for cid, v in self.voices.items()},
            hands={c: list(v) for c, v in self.hands.items()},
            heads={c: list(v) for c, v in self.heads.items()},
            network={c: list(v) for c, v in self.network.items()},
            contacts=dict(self.contacts),
            recording_dir=self.recording_dir,
            directing=self.directing(),
            gaps=[g.to_dict() for g in self.gaps],
            network_thinned=self.thinned,
        )

    def directing(self) -> list[dict[str, Any]]:
        """The automatic directing's switches, each with its epoch time ``ts_ms`` (those
        of earlier nodes of a failed-over lesson first)."""
        if self.media is None:
            return list(self.prior_directing)
        t0 = self.media.t0_epoch_ms
        return [*self.prior_directing,
                *({**sw, "ts_ms": round(t0 + float(str(sw["t_s"])) * 1000)}
                  for sw in self.media.directing_log())]

    def checkpoint(self, ts_ms: int, node_id: str) -> AnalyticsCheckpoint:
        """What has been observed up to ``ts_ms`` (the fail-over checkpoint's content)."""
        speech = {}
        for cid, voice in self.voices.items():
            segs = list(voice.smoother.segments)
            start = voice.smoother.start_ms
            if start is not None:  # still speaking: up to the last voiced frame so far
                segs.append((start, max(start, voice.smoother.last_voiced_end_ms)))
            speech[cid] = segs
        return AnalyticsCheckpoint(
            lesson_id=self.lesson.lesson_id, ts_ms=ts_ms, node_id=node_id,
            sessions={c: [(x.join_ms, x.leave_ms, x.reason) for x in ss]
                      for c, ss in self.attendance.sessions.items() if ss},
            open=self.attendance.open_sessions(), speech=speech,
            hands={c: list(v) for c, v in self.hands.items()},
            heads={c: list(v) for c, v in self.heads.items()},
            network={c: list(v) for c, v in self.network.items()},
            contacts=dict(self.contacts), directing=self.directing(), gaps=list(self.gaps),
            thinned=self.thinned)

    def merge(self, cp: AnalyticsCheckpoint, voice: Callable[[], SiteVoice]) -> None:
        """Add what a checkpoint of this lesson holds (an earlier node's part) to what
        is observed here; what both hold counts once. ``voice`` makes a classroom's
        voice state (its speech segments go there)."""
        for cid, rows in cp.closed_sessions().items():
            mine = self.attendance.sessions.setdefault(cid, [])
            mine[:] = sorted({*mine, *(AttendanceSession(*r) for r in rows)},
                             key=lambda x: (x.join_ms, x.leave_ms))
        for cid, segs in cp.speech.items():
            smoother = (self.voices.get(cid) or self.voices.setdefault(cid, voice())).smoother
            smoother.segments[:] = sorted({*smoother.segments, *segs})
        for cid, hands in cp.hands.items():
            self.hands[cid] = sorted({*self.hands.get(cid, []), *hands})
        for cid, heads in cp.heads.items():
            self.heads[cid] = sorted({*self.heads.get(cid, []), *heads})
        for cid, samples in cp.network.items():
            by_ts = {int(x["ts_ms"]): x for x in samples}
            by_ts.update((int(x["ts_ms"]), x) for x in self.network.get(cid, []))
            self.network[cid] = [by_ts[t] for t in sorted(by_ts)]
        for cid, ms in cp.contacts.items():
            self.contacts[cid] = min(ms, self.contacts.get(cid, ms))
        seen = {(x["ts_ms"], x["active"]) for x in self.prior_directing}
        self.prior_directing = sorted(
            [*self.prior_directing, *(x for x in cp.directing
                                      if (x["ts_ms"], x["active"]) not in seen)],
            key=lambda x: int(x["ts_ms"]))
        self.gaps = sorted({*self.gaps, *cp.gaps}, key=lambda g: (g.start_ms, g.end_ms))
        self.thinned = max(self.thinned, cp.thinned)


@dataclass(frozen=True)
class HandBadge:
    text: str = "HAND UP"
    seconds: float = 6.0


class Analytics:
    """Owner of every lesson's analytics in one mixer: ``start()`` then ``aclose()``."""

    def __init__(self, mixer: Mixer) -> None:
        self.mixer = mixer
        self.config: CountyConfig = mixer.config
        self.cfg = mixer.config.analytics
        data_dir = Path(mixer.config.mixer.data_dir).resolve()
        self.reports_dir = data_dir / "reports"
        self.store = ReportStore(self.cfg.database_url or f"sqlite:///{data_dir / 'analytics.db'}")
        self.lessons: dict[str, LessonAnalytics] = {}
        self.badge = HandBadge()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "analytics")
        self._counter: HeadCounter | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self._netstats: NetStatsCollector | None = None
        self._own_netstats = False
        self._hello_ms: dict[str, int] = {}
        """Epoch ms of each connected classroom's ``hello`` (``classroom_connected``)."""
        mixer.on_media_created.append(self._media_created)
        mixer.events.subscribe(self._on_event)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, netstats: NetStatsCollector | None = None) -> None:
        """Start; uses ``netstats`` (the app's collector) or starts one of its own."""
        if self.cfg.head_count_interval_s > 0:
            try:
                self._counter = HeadCounter(self.cfg.head_count_cascade)
            except ConfigError as exc:
                logger.warning("head count disabled: %s", exc)
        if netstats is None:
            netstats = NetStatsCollector(self.mixer, self.config.ops)
            netstats.start()
            self._own_netstats = True
        self._netstats = netstats
        netstats.on_sample.append(self._on_health)

    async def aclose(self) -> None:
        """Finish pending reports (bounded wait), then stop."""
        pending = list(self._bg)
        if pending:
            await asyncio.wait(pending, timeout=15)
        for task in list(self._bg):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._netstats is not None:
            with contextlib.suppress(ValueError):
                self._netstats.on_sample.remove(self._on_health)
            if self._own_netstats:
                await self._netstats.aclose()
        with contextlib.suppress(ValueError):
            self.mixer.events.unsubscribe(self._on_event)
        with contextlib.suppress(ValueError):
            self.mixer.on_media_created.remove(self._media_created)
        self._pool.shutdown(wait=True)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._bg.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._bg.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("analytics task %s failed", task.get_name(), exc_info=task.exception())

    # -- taps ---------------------------------------------------------------------------------
    def _media_created(self, media: LessonMedia) -> None:
        la = self.lessons.setdefault(media.lesson.lesson_id, LessonAnalytics(media.lesson))
        la.media = media
        for cid in media.lesson.classrooms:  # agents already connected when it started
            if cid in self._hello_ms:
                la.contacts.setdefault(cid, self._hello_ms[cid])
        if not self.cfg.enabled:
            return
        media.audio_pts_taps.append(lambda cid, block, pts: self._on_audio(la, cid, block, pts))
        media.video_taps.append(lambda cid, frame: self._on_video(la, cid, frame))

    def _on_audio(self, la: LessonAnalytics, cid: str, block: np.ndarray,
                  pts: int | None) -> None:
        voice = la.voices.get(cid)
        if voice is None:
            voice = la.voices[cid] = SiteVoice(self.cfg.vad_aggressiveness,
                                               self.cfg.vad_hangover_ms)
        voice.push(block, now_ms(), pts)
        if la.media is not None:  # automatic directing follows who speaks
            smoother = voice.smoother
            la.media.set_speaking(cid, smoother.speaking, smoother.start_ms,
                                  smoother.last_voiced_end_ms)

    def _on_video(self, la: LessonAnalytics, cid: str, frame: av.VideoFrame) -> None:
        if self._counter is None or cid in la.head_pending or cid == COURSEWARE:
            return
        now = time.monotonic()
        if now < la.next_head_s.get(cid, 0.0):
            return
        la.next_head_s[cid] = now + self.cfg.head_count_interval_s
        la.head_pending.add(cid)
        ts = now_ms()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, self._count, frame)

        def done(f: asyncio.Future[int]) -> None:
            la.head_pending.discard(cid)
            if f.cancelled() or f.exception() is not None:
                logger.warning("lesson %s: head count of %s failed: %s", la.lesson.lesson_id,
                               cid, None if f.cancelled() else f.exception())
                return
            la.heads.setdefault(cid, []).append((ts, f.result()))

        fut.add_done_callback(done)

    def _count(self, frame: av.VideoFrame) -> int:
        assert self._counter is not None
        plane = frame.planes[0]
        y = np.frombuffer(memoryview(plane), np.uint8)
        y = y[: plane.line_size * frame.height].reshape(frame.height, plane.line_size)
        return self._counter.count(y[:, : frame.width])

    def _on_health(self, snapshot: dict[str, ClassroomHealth], _mixer: MixerHealth) -> None:
        for la in self.lessons.values():
            if la.lesson.state != "live":
                continue
            ts = now_ms()
            if ts - la.last_network_ms < self.cfg.network_interval_s * 1000 - 100:
                continue
            la.last_network_ms = ts
            for cid in la.lesson.classrooms:
                h = snapshot.get(cid)
                if h is None or h.lesson_id != la.lesson.lesson_id:
                    continue
                bitrate = h.bitrate_in_kbps
                la.network.setdefault(cid, []).append({
                    "ts_ms": h.ts_ms, "rtt_ms": h.rtt_ms, "jitter_ms": h.jitter_ms,
                    "loss_percent": h.loss_percent, "bitrate_kbps": bitrate,
                    "fps": h.fps_in, "freezes": h.freezes, "latency_ms": h.latency_ms,
                })

    # -- fail-over (several nodes: mixer.cluster) ---------------------------------------------
    def checkpoint(self, lesson: Lesson, ts_ms: int, node_id: str) -> str | None:
        """The lesson's analytics up to ``ts_ms`` as a checkpoint document (at most
        :data:`~syncclass.analytics.checkpoint.MAX_CHECKPOINT_BYTES`), which
        :meth:`resume` on another node reads back; ``None`` if there is nothing of it
        here (or it cannot be bounded: logged)."""
        la = self.lessons.get(lesson.lesson_id)
        if la is None or la.done.is_set() or la.lesson.state != "live":
            return None
        try:
            return la.checkpoint(ts_ms, node_id).to_json()
        except ValueError as exc:
            logger.error("lesson %s: analytics not checkpointed (a fail-over would lose "
                         "them): %s", lesson.lesson_id, exc)
            return None

    def resume(self, lesson: Lesson, doc: str | None, resumed_ms: int) -> None:
        """A live lesson another node held was just resumed here (before any of its
        classrooms rejoined): add the analytics of its checkpoint ``doc`` (``None``: the
        node wrote none), and a gap from the checkpoint to ``resumed_ms``. A malformed,
        oversized or foreign checkpoint is logged and left out; the lesson goes on."""
        la = self.lessons.setdefault(lesson.lesson_id, LessonAnalytics(lesson))
        cp: AnalyticsCheckpoint | None = None
        if doc is not None:
            try:
                cp = AnalyticsCheckpoint.parse(doc)
                if cp.lesson_id != lesson.lesson_id:
                    raise ValueError(f"it is of lesson {cp.lesson_id!r}")
            except ValueError as exc:
                cp = None
                logger.error("lesson %s: analytics checkpoint unusable (%s); the report "
                             "covers the lesson from its resumption on", lesson.lesson_id, exc)
        if cp is None:
            la.gaps.append(Gap(min(resumed_ms, lesson.started_ms or resumed_ms), resumed_ms,
                               checkpoint=False))
            return
        la.merge(cp, lambda: SiteVoice(self.cfg.vad_aggressiveness, self.cfg.vad_hangover_ms))
        la.gaps.append(Gap(min(cp.ts_ms, resumed_ms), resumed_ms))
        logger.warning("lesson %s: analytics of node %s restored (up to %d ms before the "
                       "resumption)", lesson.lesson_id, cp.node_id or "?", resumed_ms - cp.ts_ms)

    # -- events -------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        la = self.lessons.get(event.lesson_id) if event.lesson_id else None
        if event.name == "classroom_connected" and event.classroom_id:
            self._hello_ms[event.classroom_id] = event.ts_ms
            if la is not None:
                la.contacts.setdefault(event.classroom_id, event.ts_ms)
        elif event.name == "classroom_disconnected" and event.classroom_id:
            self._hello_ms.pop(event.classroom_id, None)
        elif event.name == "classroom_joined" and la is not None and event.classroom_id:
            la.attendance.join(event.classroom_id, event.ts_ms)
        elif event.name == "classroom_left" and la is not None and event.classroom_id:
            la.attendance.leave(event.classroom_id, event.ts_ms,
                                str(event.data.get("reason", "left")))
            voice = la.voices.get(event.classroom_id)
            if voice is not None:
                voice.gap()
        elif event.name == "hand_raised" and la is not None and event.classroom_id:
            self._hand_raised(la, event.classroom_id, event.ts_ms)
        elif event.name == "lesson_ended" and la is not None:
            self._spawn(self._finish(la), f"report:{la.lesson.lesson_id}")
        elif event.name == "recording_ready" and event.lesson_id:
            # Never a path from the event (a recorder's report): the folder the recorder
            # archives this lesson to, by this mixer's config, if the recording is there
            # (so an id with no recording adds nothing here).
            folder = recording_folder(self.config.recorder, event.lesson_id)
            if folder is not None and folder.is_dir():
                target = la or self.load_finished(event.lesson_id) or self._placeholder(event)
                self.lessons.setdefault(event.lesson_id, target)
                target.recording_dir = str(folder)
                if target.report_paths is not None:
                    self._spawn(self._copy_beside_recording(target), "report-copy")

    def _placeholder(self, event: Event) -> LessonAnalytics:
        lesson = self.mixer.lessons.lesson_of(event.classroom_id or "") if event.classroom_id \
            else None
        assert event.lesson_id is not None
        return LessonAnalytics(lesson if lesson is not None and
                               lesson.lesson_id == event.lesson_id else
                               Lesson(event.lesson_id, "", "", [], "", "", "", None))

    def load_finished(self, lesson_id: str) -> LessonAnalytics | None:
        """A report written by an earlier run of the mixer (from its folder), if any."""
        folder = self.reports_dir / lesson_id
        if "/" in lesson_id or ".." in lesson_id or not (folder / "report.json").is_file():
            return None
        try:
            info = json.loads((folder / "report.json").read_text(encoding="utf-8"))["lesson"]
            lesson = Lesson(info["lesson_id"], info["pairing_id"], info["main"],
                            list(info["receiving"]), info["subject"], info["grade"],
                            info["teacher"], info.get("timetable_id"), "ended",
                            info.get("started_ms"), info.get("ended_ms"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("report %s unreadable: %s", folder, exc)
            return None
        la = LessonAnalytics(lesson)
        la.report_paths = {k: str(folder / REPORT_FILES[k]) for k in REPORT_FILES}
        return la

    def _hand_raised(self, la: LessonAnalytics, cid: str, ts_ms: int) -> None:
        hands = la.hands.setdefault(cid, [])
        if hands and ts_ms - hands[-1] < HAND_DEBOUNCE_MS:
            return
        hands.append(ts_ms)
        logger.info("lesson %s: %s raised a hand (%d)", la.lesson.lesson_id, cid, len(hands))
        media = la.media
        if media is None:
            return
        until = time.monotonic() + self.badge.seconds
        for view in media.views.values():
            if view.config.shown_to == "main":
                view.compositor.set_badge(cid, self.badge.text, until)

    # -- report -------------------------------------------------------------------------------
    async def _finish(self, la: LessonAnalytics) -> None:
        lesson = la.lesson
        end = lesson.ended_ms or now_ms()
        la.attendance.close(end)
        for voice in la.voices.values():
            voice.smoother.flush()
        data = la.data()
        folder = self.reports_dir / lesson.lesson_id
        loop = asyncio.get_running_loop()

        def work() -> dict[str, str]:
            report = build_report(self.config, data, now_ms())
            paths = write_report(report, folder)
            lesson_row, rows = db_rows(report, paths["json"])
            try:
                self.store.save(lesson_row, rows)
                paths["database"] = self.store.shown_url
            except Exception:
                logger.exception("lesson %s: cannot store report rows in %s",
                                 lesson.lesson_id, self.store.shown_url)
            return paths

        # Not self._pool: that one may be busy counting heads.
        paths = await loop.run_in_executor(None, work)
        la.report_paths = paths
        logger.info("lesson %s: report written to %s", lesson.lesson_id, folder)
        if la.recording_dir:
            await self._copy_beside_recording(la)
        la.release()
        # The lesson's media pipeline is gone: hand its freed heap back to the OS.
        await loop.run_in_executor(None, release_free_memory)
        la.done.set()
        self._forget_old()
        self.mixer.emit("report_ready", lesson.lesson_id, lesson.main,
                        folder=str(folder.resolve()), **paths,
                        url=f"/reports/{lesson.lesson_id}/")

    def _forget_old(self, keep: int = KEEP_FINISHED) -> None:
        """Bound memory: finished lessons beyond the newest ``keep`` are dropped (their
        reports stay on disk and are found again by :meth:`load_finished`)."""
        finished = [lid for lid, x in self.lessons.items() if x.done.is_set()]
        for lid in finished[:-keep] if keep else finished:
            del self.lessons[lid]

    async def _copy_beside_recording(self, la: LessonAnalytics) -> None:
        """Copy the report beside the recording; a report written before the recording
        was ready is first rewritten with its ``recording_dir``."""
        assert la.report_paths is not None and la.recording_dir is not None
        dest = Path(la.recording_dir)
        srcs = [Path(la.report_paths[k]) for k in REPORT_FILES]

        def copy() -> None:
            if not dest.is_dir():  # created by the recorder only, never from here
                raise FileNotFoundError(f"no recording folder {dest}")
            report = json.loads(srcs[0].read_text(encoding="utf-8"))
            if report.get("recording_dir") != str(dest):
                report["recording_dir"] = str(dest)
                write_report(report, srcs[0].parent)
            for src in srcs:
                if src.is_file():  # report-excel.csv: not in reports of older versions
                    shutil.copy2(src, dest / src.name)

        try:
            await asyncio.get_running_loop().run_in_executor(None, copy)
            la.report_paths["beside_recording"] = str(dest)
        except OSError as exc:
            logger.warning("lesson %s: cannot copy the report beside the recording %s: %s",
                           la.lesson.lesson_id, dest, exc)


def recording_folder(recorder: RecorderConfig, lesson_id: str) -> Path | None:
    """The local folder a lesson's recording is archived in: ``<archive_dir>/<lesson_id>``
    when the archive is local and ``lesson_id`` is a lesson id (never a path taken from a
    message), else ``None``."""
    if recorder.archive != "local" or not is_lesson_id(lesson_id):
        return None
    root = Path(recorder.archive_dir).resolve()
    folder = (root / lesson_id).resolve()
    return folder if folder.parent == root else None


ANALYTICS_KEY = web.AppKey("analytics", Analytics)
HAND_DEBOUNCE_MS = 2000
"""Presses of the same classroom closer together than this count as one raised hand."""


def raise_hand(mixer: Mixer, classroom_id: str) -> Lesson:
    """A receiving classroom raises its hand in its live lesson: emits ``hand_raised``.

    Raises :class:`AuthError` for a main classroom and :class:`InvalidStateError` when
    the classroom has no live lesson."""
    room = mixer.config.classroom(classroom_id)
    if room.role != "receiving":
        raise AuthError("not_allowed", "only receiving classrooms raise hands")
    lesson = mixer.lessons.lesson_of(classroom_id)
    if lesson is None or lesson.state != "live":
        raise InvalidStateError(f"classroom {classroom_id!r} has no live lesson")
    mixer.emit("hand_raised", lesson.lesson_id, classroom_id)
    return lesson


# -- HTTP ---------------------------------------------------------------------------------------


REPORT_GRANT_S = 3600.0
"""How long a report link's cookie (``?token=`` swapped for it) lets a browser read, s."""


def _authorized(request: web.Request, lesson: Lesson) -> bool:
    """A dashboard user, the ops API token, or a classroom or observer of this lesson's
    pairing (``Authorization: Bearer``) may read the lesson's report; so may a browser
    holding this report's grant cookie (see :func:`_swap_query_token`)."""
    if report_grant_valid(request, request.cookies.get(REPORT_COOKIE), lesson.lesson_id,
                          time.time()):
        return True
    reader = reader_of(request)  # 401 for a wrong credential
    return reader is not None and reader.may_read(lesson.pairing_id)


def _swap_query_token(request: web.Request, lesson: Lesson) -> None:
    """A report link ``/reports/<id>/...?token=<credential>`` (opened in a browser, which
    cannot send headers): check the credential, then answer 303 to the same path without
    it, setting an HttpOnly cookie that grants this one report for
    :data:`REPORT_GRANT_S`. The credential leaves the address bar, history and Referer;
    the access log never shows query strings (:class:`~mixer.guard.RedactingAccessLogger`)."""
    token = request.query.get("token")
    if token is None:
        return
    reader = reader_of(_with_bearer(request, token))
    if reader is None or not reader.may_read(lesson.pairing_id):
        raise json_error(web.HTTPForbidden, "not_paired",
                         "this credential may not read this lesson")
    resp = web.HTTPSeeOther(request.path, headers={"Cache-Control": "no-store",
                                                    "Referrer-Policy": "no-referrer"})
    resp.set_cookie(REPORT_COOKIE, issue_report_grant(request, lesson.lesson_id, time.time(),
                                                      REPORT_GRANT_S),
                    max_age=int(REPORT_GRANT_S), path=f"/reports/{lesson.lesson_id}/",
                    httponly=True, samesite="Strict", secure=request.secure)
    raise resp


def _with_bearer(request: web.Request, token: str) -> web.Request:
    headers = request.headers.copy()
    headers["Authorization"] = f"Bearer {token}"
    return request.clone(headers=headers)


def _lesson_for(request: web.Request, *, link: bool = False) -> tuple[Analytics, LessonAnalytics]:
    """The lesson a report route names, if the request may read it. ``link``: a browser
    route where ``?token=`` is swapped for a cookie (JSON routes take headers only)."""
    analytics = request.app[ANALYTICS_KEY]
    lesson_id = request.match_info["lesson_id"]
    la = analytics.lessons.get(lesson_id)
    if la is None:
        la = analytics.load_finished(lesson_id)
    if la is None:
        if reader_of(request) is None:  # tell strangers nothing
            raise json_error(web.HTTPUnauthorized, "auth_required",
                             "log in to the dashboard or give a classroom token of this lesson")
        raise json_error(web.HTTPNotFound, "not_found", f"no lesson {lesson_id!r}")
    if link:
        _swap_query_token(request, la.lesson)
    if not _authorized(request, la.lesson):
        raise json_error(web.HTTPUnauthorized, "auth_required",
                          "log in to the dashboard or give a classroom token of this lesson")
    return analytics, la


async def report_status(request: web.Request) -> web.Response:
    """``GET /api/reports/{lesson_id}``: whether the report is ready, and its files."""
    _, la = _lesson_for(request)
    return web.json_response({"lesson_id": la.lesson.lesson_id,
                              "ready": la.report_paths is not None,
                              "paths": la.report_paths,
                              "url": f"/reports/{la.lesson.lesson_id}/"}, dumps=dumps_strict)


async def report_file(request: web.Request) -> web.StreamResponse:
    """``GET /reports/{lesson_id}/`` (the page), ``.../report.json``, ``.../report.csv``,
    ``.../report-excel.csv`` (for Microsoft Excel)."""
    _, la = _lesson_for(request, link=True)
    name = request.match_info.get("name") or "report.html"
    kinds = {"report.html": ("html", "text/html"), "report.json": ("json", "application/json"),
             "report.csv": ("csv", "text/csv"), "report-excel.csv": ("excel_csv", "text/csv")}
    if name not in kinds:
        raise json_error(web.HTTPNotFound, "not_found", f"no report file {name!r}")
    if la.report_paths is None:
        raise json_error(web.HTTPNotFound, "not_ready",
                          "the report is written when the lesson ends")
    key, ctype = kinds[name]
    if key not in la.report_paths:  # report-excel.csv: not in reports of older versions
        raise json_error(web.HTTPNotFound, "not_found", f"no report file {name!r}")
    try:  # bytes: the Excel file's byte-order mark stays
        body = await asyncio.to_thread(Path(la.report_paths[key]).read_bytes)
    except FileNotFoundError:
        raise json_error(web.HTTPNotFound, "not_found", f"no report file {name!r}") from None
    return web.Response(body=body, content_type=ctype, charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def hand_route(request: web.Request) -> web.Response:
    """``POST /api/hand`` ``{"classroom_id": ...}`` with the classroom's Bearer token."""
    analytics = request.app[ANALYTICS_KEY]
    mixer = analytics.mixer
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        raise json_error(web.HTTPUnauthorized, "auth_required", "Bearer token required")
    body = await json_object_body(request, mixer.config.mixer.max_message_bytes)
    try:
        room = mixer.authenticate(str(body.get("classroom_id", "")), auth[len("Bearer "):],
                                  request.remote)  # failures count per address
        lesson = raise_hand(mixer, room.id)
    except AuthError as exc:
        status = {"auth_failed": web.HTTPUnauthorized,
                  "rate_limited": web.HTTPTooManyRequests}.get(exc.code, web.HTTPForbidden)
        raise json_error(status, exc.code, exc.message) from None
    except InvalidStateError as exc:
        raise json_error(web.HTTPConflict, "no_lesson", str(exc)) from None
    la = analytics.lessons.get(lesson.lesson_id)
    count = len(la.hands.get(room.id, [])) if la else 0
    return web.json_response({"lesson_id": lesson.lesson_id, "classroom_id": room.id,
                              "hand_raises": count}, dumps=dumps_strict)


def setup_analytics(app: web.Application, mixer: Mixer, *,
                    netstats: NetStatsCollector | None = None) -> Analytics:
    """Attach analytics to the mixer app; ``netstats``: the app's health sampler (the
    dashboard's), else analytics starts one of its own."""
    analytics = Analytics(mixer)
    app[ANALYTICS_KEY] = analytics

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        analytics.start(netstats)
        yield
        await analytics.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/api/reports/{lesson_id}", report_status)
    app.router.add_get("/reports/{lesson_id}/", report_file)
    app.router.add_get("/reports/{lesson_id}/{name}", report_file)
    app.router.add_post("/api/hand", hand_route)
    return analytics
