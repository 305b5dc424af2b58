"""The media pipeline of one live lesson.

decode (aiortc receivers) → latest frame per classroom → compose each view in YUV420 →
encode each view ONCE (H.264) → the same packets to every classroom showing that view.
Audio: per-classroom FIFOs → every 20 ms an N-1 mix per listener + the full mix; the
listeners' mixes are Opus-encoded here (mono, all in one worker-thread call per 20 ms) and
handed to aiortc as packets.

Threads: composition of all views runs in one worker thread (sharing a scale cache), then
the views' encoders run in parallel worker threads (PyAV releases the GIL), so the event
loop only fans packets out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fractions
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from syncclass import switches
from syncclass.adapt import (
    GCC_DOWN_HOLD_S,
    GCC_LOW_MAX_RATIO,
    GCC_UP_HOLD_S,
    AdaptPolicy,
    LinkFeedback,
)
from syncclass.audio import level_dbov, mix_n_minus_1
from syncclass.codec import H264Encoder
from syncclass.config import CountyConfig, ViewConfig
from syncclass.directing import COURSEWARE, DirectingRules, Director, Heard, Shot, Switch
from syncclass.layout import Tile, courseware_layout, grid_layout, speaker_layout
from syncclass.lesson import Lesson
from syncclass.lipsync import LipSync, SenderClock, stretch
from syncclass.protocol import Layout, Placement
from syncclass.rtc import VIDEO_TIME_BASE, PacketQueueTrack, audio_frame_to_mono, recv_newest

from .compose import Compositor, ScaleCache, SourceFrame
from .renditions import ViewRenditions
from .tickphase import TickPhase

logger = logging.getLogger(__name__)

AUDIO_RATE = 48000
COURSEWARE_LABEL = "课件 courseware"
"""Label of the courseware picture."""
COURSEWARE_NUMBER = 255
"""``classroom_number`` of the courseware in layouts (it carries no timecode)."""
AUDIO_FRAME = 960  # 20 ms
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
AUDIO_MAX_BUFFER = AUDIO_FRAME * 15
"""Samples buffered per input before the oldest are dropped: bounds the delay lip sync
may add to match a slow picture (300 ms) and a burst's backlog."""
AUDIO_CONCEAL_FRAMES = 2
"""Underruns concealed by repeating the last block, attenuated, before falling silent."""
AUDIO_JITTER_RESERVE = AUDIO_FRAME
"""Samples lip sync's catch-up leaves in a classroom's FIFO after a block is taken."""


@dataclass
class VideoInput:
    classroom_id: str
    latest: SourceFrame | None = None
    frames: int = 0
    clock: SenderClock | None = None
    """The sender's clock of this video (RTCP sender reports), for lip sync."""
    stale_skipped: int = 0
    """Decoded frames passed over because a newer one was already waiting."""


@dataclass
class AudioInput:
    classroom_id: str
    fifo: deque[tuple[np.ndarray, int | None]] = field(default_factory=deque)
    """Decoded blocks with the RTP timestamp (48 kHz) of their first sample."""
    buffered: int = 0
    frames: int = 0
    dropped_samples: int = 0
    level_dbov: float = -127.0
    concealed: int = 0
    underruns: int = 0
    clock: SenderClock | None = None
    """The sender's clock of this audio (RTCP sender reports), for lip sync."""
    sync: LipSync = field(default_factory=lambda: LipSync(sample_rate=AUDIO_RATE))
    _last: np.ndarray | None = None
    _missing: int = 0

    def push(self, samples: np.ndarray, rtp_timestamp: int | None = None) -> None:
        self.fifo.append((samples, rtp_timestamp))
        self.buffered += len(samples)
        self.frames += 1
        while self.buffered > AUDIO_MAX_BUFFER:
            old, _ = self.fifo.popleft()
            self.buffered -= len(old)
            self.dropped_samples += len(old)

    def clear(self) -> None:
        self.fifo.clear()
        self.buffered = 0
        self.sync.reset()

    def pull(self, n: int, at_s: float | None = None) -> np.ndarray | None:
        """``n`` samples for the block mixed at local time ``at_s`` (wall-clock seconds).

        Lip sync (:class:`~syncclass.lipsync.LipSync`) may take a few samples more or fewer
        and resample them to ``n``. On an underrun (a lost or late packet) the last block
        is repeated, halved each time, for up to :data:`AUDIO_CONCEAL_FRAMES` blocks; then
        None (silence)."""
        if self.buffered < n:
            if self._last is None or self.frames == 0:
                return None
            self.underruns += 1
            self._missing += 1
            if self._missing > AUDIO_CONCEAL_FRAMES or len(self._last) != n:
                return None
            self.concealed += 1
            self._last = (self._last // 2).astype(np.int16)
            return self._last
        self._missing = 0
        if at_s is not None and self.clock is not None:
            head_rtp = self.fifo[0][1]
            captured = self.clock.time_of(head_rtp) if head_rtp is not None else None
            if captured is not None:
                self.sync.observe_audio(at_s - captured)
        # Catching up never eats into one block kept back for arrival jitter: a FIFO drained
        # to zero would underrun at the next late packet, and audio at its floor would be
        # squeezed block after block (pitch raised, then concealed) for nothing.
        take = self.sync.take(n, self.buffered - AUDIO_JITTER_RESERVE)
        if self.buffered - take > AUDIO_MAX_BUFFER - 2 * AUDIO_FRAME:
            take = max(take, n)  # no further delay than the FIFO holds
        self.sync.samples_stretched += n - take
        out = np.empty(take, dtype=np.int16)
        filled = 0
        while filled < take:
            head, rtp = self.fifo[0]
            count = min(take - filled, len(head))
            out[filled : filled + count] = head[:count]
            if count == len(head):
                self.fifo.popleft()
            else:
                self.fifo[0] = (head[count:], None if rtp is None else rtp + count)
            filled += count
        self.buffered -= take
        out = stretch(out, n)
        self._last = out
        return out


@dataclass
class ViewOutput:
    """One composed view: its compositor, its one encoder and its subscribers."""

    name: str
    config: ViewConfig
    compositor: Compositor
    encoder: H264Encoder
    subscribers: dict[str, PacketQueueTrack] = field(default_factory=dict)
    frames_composed: int = 0
    frames_skipped: int = 0
    last_layout: Layout | None = None
    renditions: ViewRenditions | None = None
    """The low rendition for thin downlinks and who gets which (set by LessonMedia)."""


class LessonMedia:
    """Owns every media task of one lesson: ``start()`` then ``aclose()``."""

    def __init__(
        self,
        config: CountyConfig,
        lesson: Lesson,
        on_layout: Callable[[str, Layout], None] | None = None,
    ) -> None:
        self.config = config
        self.lesson = lesson
        self.media = config.media
        self._on_layout = on_layout
        self._video: dict[str, VideoInput] = {}
        self._audio: dict[str, AudioInput] = {}
        self._audio_out: dict[str, PacketQueueTrack] = {}
        self._mix_encoders: dict[str, MixEncoder] = {}
        self._encode_mixes = switches.current().mix_opus != "aiortc"
        """Encode each listener's mix here (default) or hand aiortc frames (its Opus encoder
        runs per sender in the default executor, upmixing to stereo): for side by side."""
        self._audio_pool = concurrent.futures.ThreadPoolExecutor(1, "audio-encode")
        self.audio_taps: list[Callable[[str, np.ndarray], None]] = []
        """Called with (classroom_id, int16 mono 48 kHz block) for every decoded input block
        (analytics: voice activity)."""
        self.audio_pts_taps: list[Callable[[str, np.ndarray, int | None], None]] = []
        """Like ``audio_taps`` plus the block's RTP-derived pts (48 kHz units; gaps in the
        sender's timeline show as jumps) for consumers that place audio in time."""
        self.video_taps: list[Callable[[str, av.VideoFrame], None]] = []
        """Called with (classroom_id, frame) for every decoded input frame; subscribers
        sample what they need and must return quickly."""
        self.full_mix_listeners: list[Callable[[av.AudioFrame], None]] = []
        """Called with every 20 ms frame of the full mix (the recorder taps here)."""
        self.packet_listeners: dict[str, list[Callable[[av.Packet], None]]] = {}
        """Called with every encoded packet of a view (the recorder taps here)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._input_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._compose_pool = concurrent.futures.ThreadPoolExecutor(1, "compose")
        self._encode_pool = concurrent.futures.ThreadPoolExecutor(
            max(1, len(config.views)), "encode"
        )
        self._t0 = time.monotonic()
        self.t0_epoch_ms = time.time() * 1000.0
        """Wall-clock time (epoch ms) of the media clock's origin: video pts (1/90000 s)
        and audio pts (1/48000 s) both count from this instant (``time.monotonic()`` at
        construction), so the recording's streams share one clock."""
        self.audio_ticks = 0
        self.audio_late_ticks = 0
        self.tick_phase = TickPhase(1.0 / self.media.fps)
        """Keeps the composition ticks just after the teacher's frames arrive."""
        labels = {c.id: c.label for c in config.classrooms}
        labels[COURSEWARE] = COURSEWARE_LABEL
        self._labels = labels
        self.director = Director(lesson.main, DirectingRules(
            **self.media.directing.model_dump()))
        """Automatic directing (自动导播) of the directed views (see :meth:`directed`)."""
        self._speaking: set[str] = set()
        self._heard: dict[str, Heard] = {}
        """Per classroom, the voice detector's times of speech (lesson time)."""
        self._courseware_shared = False
        self.views: dict[str, ViewOutput] = {}
        for name, view in config.views.items():
            tiles = self._tiles(view, labels)
            self.views[name] = ViewOutput(
                name=name,
                config=view,
                compositor=Compositor(
                    self.media.width, self.media.height, tiles, self.media.freeze_timeout_s
                ),
                encoder=H264Encoder(
                    self.media.width,
                    self.media.height,
                    self.media.fps,
                    self.media.bitrate_kbps,
                    self.media.keyframe_interval_s,
                    self.media.keyframe_min_interval_s,
                    # Views encode in parallel threads: one slice thread each uses the two
                    # cores best (measured: 7.8 ms per pair of 720p frames vs 9.3 ms).
                    threads=1,
                    name=name,
                ),
            )
            self.packet_listeners[name] = []
        adapt = self.media.adaptation
        for v in self.views.values():
            policy = AdaptPolicy(min_bitrate_kbps=adapt.min_bitrate_kbps)
            if adapt.estimator == "gcc":
                policy = dataclasses.replace(policy, up_hold_s=GCC_UP_HOLD_S,
                                             down_hold_s=GCC_DOWN_HOLD_S,
                                             low_max_ratio=GCC_LOW_MAX_RATIO)
            v.renditions = ViewRenditions(
                v.name, self.media, v.encoder, policy,
                start_kbps=float(adapt.start_kbps) if adapt.estimator == "gcc" else None,
                enabled=adapt.enabled and adapt.low_rendition,
            )
        self.encoders_created = len(self.views)
        """Video encoders of this lesson: one per view, never one per classroom."""

    def _select(self, selector: str | None) -> list[str]:
        if selector == "main":
            return [self.lesson.main]
        if selector == "receiving":
            return list(self.lesson.receiving)
        return []

    def _tiles(self, view: ViewConfig, labels: dict[str, str]) -> list[Tile]:
        w, h = self.media.width, self.media.height
        if view.layout == "speaker":
            featured = self._select(view.featured)
            others = [c for c in self._select(view.tiles) if c not in featured]
            return speaker_layout(w, h, featured[0] if featured else None, others, labels)
        return grid_layout(w, h, self._select(view.tiles), labels)

    @staticmethod
    def directed(view: ViewConfig) -> bool:
        """Whether automatic directing lays out ``view``: a speaker view featuring the
        main classroom (the students' view, shown in the rural rooms and recorded)."""
        return view.layout == "speaker" and view.featured == "main"

    def _shot_tiles(self, view: ViewConfig, shot: Shot) -> list[Tile]:
        """The tiles of a directed view for ``shot``."""
        w, h = self.media.width, self.media.height
        people = [self.lesson.main, *self._select(view.tiles)]
        others = [c for c in people if c != shot.active]
        if shot.courseware:
            return courseware_layout(w, h, COURSEWARE, shot.active, others, self._labels)
        return speaker_layout(w, h, shot.active, others, self._labels)

    # -- directing ----------------------------------------------------------------------------
    def set_speaking(self, classroom_id: str, speaking: bool, start_ms: float | None = None,
                     last_voiced_ms: float | None = None) -> None:
        """Voice activity of a classroom (the analytics' smoothed VAD), for directing:
        whether it speaks, and when known the detector's start of the speech and end of
        its last voiced frame (epoch ms), so that directing counts from the speech, not
        from when the detector's decision arrived here."""
        if speaking:
            self._speaking.add(classroom_id)
        else:
            self._speaking.discard(classroom_id)
        if last_voiced_ms is None or last_voiced_ms <= 0:
            return  # no times from this detector, or no speech yet
        last_s = (last_voiced_ms - self.t0_epoch_ms) / 1000
        prev = self._heard.get(classroom_id)
        if start_ms is not None:
            start_s = (start_ms - self.t0_epoch_ms) / 1000
        else:  # silent: the last stretch's start stays
            start_s = prev.start_s if prev is not None else last_s
        self._heard[classroom_id] = Heard(start_s, last_s)

    def set_courseware(self, shared: bool) -> None:
        """The main classroom started (True) or stopped sharing its courseware (共享课件)."""
        self._courseware_shared = shared
        logger.info("lesson %s: courseware %s", self.lesson.lesson_id,
                    "shared" if shared else "stopped")

    def set_directing(self, choice: str | None) -> None:
        """The teacher's 导播 button: a classroom id, ``@courseware``, or None/``auto``."""
        self.director.set_override(choice)
        logger.info("lesson %s: directing %s", self.lesson.lesson_id, choice or "auto")

    def courseware_shown(self, now: float | None = None) -> bool:
        """Courseware is shared and its pictures arrive (one within the freeze timeout)."""
        vin = self._video.get(COURSEWARE)
        if not self._courseware_shared or vin is None or vin.latest is None:
            return False
        now = time.monotonic() if now is None else now
        return now - vin.latest.received_at <= self._courseware_timeout()

    def _courseware_timeout(self) -> float:
        """How long a still courseware (one frame a second) may go without a frame before
        it counts as frozen, s."""
        return max(self.media.freeze_timeout_s, 3.0)

    def _direct(self) -> Switch | None:
        """One directing step at this composition tick; re-lays the directed views on a
        switch (between compositions, so no compositor is in use)."""
        now = time.monotonic()
        present = {c for c in self.lesson.receiving
                   if (vin := self._video.get(c)) is not None and vin.latest is not None}
        switch = self.director.step(now - self._t0, self._speaking, self.courseware_shown(now),
                                    present, self._heard)
        if switch is None:
            return None
        logger.info("lesson %s: directing %.1f s: %s%s (%s)", self.lesson.lesson_id,
                    switch.t_s, switch.shot.active,
                    " + courseware" if switch.shot.courseware else "", switch.reason)
        for view in self.views.values():
            if self.directed(view.config):
                view.compositor.freeze_timeouts[COURSEWARE] = self._courseware_timeout()
                view.compositor.set_tiles(self._shot_tiles(view.config, switch.shot))
        return switch

    def directing_log(self) -> list[dict[str, object]]:
        """Every switch so far (lesson time from the media clock's origin, s)."""
        return [sw.to_dict() for sw in self.director.switches]

    def views_for(self, classroom_id: str) -> list[str]:
        """Names of the views shown to this classroom."""
        role = "main" if classroom_id == self.lesson.main else "receiving"
        return [n for n, v in self.views.items() if v.config.shown_to == role]

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._compose_loop(), "compose")
        self._spawn(self._audio_loop(), "audio-mix")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.lesson.lesson_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("lesson %s: task %s failed", self.lesson.lesson_id, task.get_name(),
                         exc_info=task.exception())

    async def aclose(self) -> None:
        for cid, ain in self._audio.items():
            logger.info("lesson %s: classroom %s lip sync %s", self.lesson.lesson_id, cid,
                        _lipsync_stats(ain))
        for view in self.views.values():
            for track in view.subscribers.values():
                track.stop()
        for track in self._audio_out.values():
            track.stop()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._compose_pool.shutdown(wait=True)
        self._encode_pool.shutdown(wait=True)
        self._audio_pool.shutdown(wait=True)

    # -- inputs -------------------------------------------------------------------------------
    def add_input(self, classroom_id: str, track: MediaStreamTrack,
                  clock: SenderClock | None = None) -> None:
        """Start reading a classroom's decoded video or audio track; ``clock`` maps its
        RTP timestamps to the sender's time (RTCP sender reports), for lip sync."""
        key = (classroom_id, track.kind)
        old = self._input_tasks.pop(key, None)
        if old is not None:
            old.cancel()
        if track.kind == "video":
            vin = self._video.setdefault(classroom_id, VideoInput(classroom_id))
            vin.clock = clock
            task = self._spawn(self._read_video(vin, track), f"video-in:{classroom_id}")
        else:
            ain = self._audio.setdefault(classroom_id, AudioInput(classroom_id))
            ain.clear()
            ain.clock = clock
            task = self._spawn(self._read_audio(ain, track), f"audio-in:{classroom_id}")
        self._input_tasks[key] = task

    def remove_classroom(self, classroom_id: str) -> None:
        """A classroom left: stop its inputs and outputs (its tile shows a placeholder);
        the main classroom's courseware goes with it."""
        keys = [(classroom_id, "video"), (classroom_id, "audio")]
        if classroom_id == self.lesson.main:
            keys.append((COURSEWARE, "video"))
            cw = self._video.get(COURSEWARE)
            if cw is not None:
                cw.latest = None
        for key in keys:
            task = self._input_tasks.pop(key, None)
            if task is not None:
                task.cancel()
        vin = self._video.get(classroom_id)
        if vin is not None:
            vin.latest = None
        ain = self._audio.pop(classroom_id, None)
        if ain is not None:
            logger.info("lesson %s: classroom %s left; lip sync %s", self.lesson.lesson_id,
                        classroom_id, _lipsync_stats(ain))
        for view in self.views.values():
            track = view.subscribers.pop(classroom_id, None)
            if view.renditions is not None:
                view.renditions.remove(classroom_id)
            if track is not None:
                track.stop()
        out = self._audio_out.pop(classroom_id, None)
        self._mix_encoders.pop(classroom_id, None)
        if out is not None:
            out.stop()

    async def _read_video(self, vin: VideoInput, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame, skipped = await recv_newest(track)
                assert isinstance(frame, av.VideoFrame)
                vin.frames += 1 + skipped
                vin.stale_skipped += skipped
                captured = (vin.clock.time_of(frame.pts)
                            if vin.clock is not None and frame.pts is not None else None)
                vin.latest = SourceFrame(frame, time.monotonic(), captured)
                for vtap in self.video_taps:
                    vtap(vin.classroom_id, frame)

    async def _read_audio(self, ain: AudioInput, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                block = audio_frame_to_mono(frame)
                ain.push(block, frame.pts)
                for atap in self.audio_taps:
                    atap(ain.classroom_id, block)
                for ptap in self.audio_pts_taps:
                    ptap(ain.classroom_id, block, frame.pts)

    # -- outputs ------------------------------------------------------------------------------
    def subscribe_view(self, view_name: str, classroom_id: str) -> PacketQueueTrack:
        """The encoded-packet track of ``view_name`` for one classroom."""
        view = self.views[view_name]
        old = view.subscribers.pop(classroom_id, None)
        if old is not None:
            old.stop()
        track = PacketQueueTrack("video", maxsize=int(self.media.fps * 2),
                                 name=f"{view_name}->{classroom_id}")
        # A receiver that fell behind lost packets: only a keyframe lets it decode again.
        assert view.renditions is not None
        track.on_overflow = functools.partial(view.renditions.request_keyframe, classroom_id)
        view.subscribers[classroom_id] = track
        view.renditions.add(classroom_id)
        view.encoder.request_keyframe()
        return track

    def audio_output(self, classroom_id: str) -> PacketQueueTrack:
        """The N-1 mixed audio track for one classroom."""
        old = self._audio_out.pop(classroom_id, None)
        if old is not None:
            old.stop()
        track = PacketQueueTrack("audio", maxsize=10, name=f"mix->{classroom_id}")
        self._audio_out[classroom_id] = track
        # A new track goes to a new sender and decoder: a new Opus stream too.
        self._mix_encoders[classroom_id] = MixEncoder(self.media.audio_bitrate_kbps)
        return track

    def request_keyframe(self, view_name: str, classroom_id: str | None = None) -> None:
        """A keyframe of ``view_name`` (of the rendition ``classroom_id`` gets, if given)."""
        view = self.views[view_name]
        if classroom_id is not None and view.renditions is not None:
            view.renditions.request_keyframe(classroom_id)
        else:
            view.encoder.request_keyframe()

    def downlink_feedback(self, view_name: str, classroom_id: str,
                          feedback: LinkFeedback) -> None:
        """RTCP feedback (REMB, loss, RTT) from ``classroom_id`` about ``view_name``, or
        the view's share of the sender-side estimate of its downlink."""
        renditions = self.views[view_name].renditions
        if renditions is not None:
            renditions.feedback(classroom_id, feedback)

    # -- loops --------------------------------------------------------------------------------
    def _pts(self) -> int:
        return int((time.monotonic() - self._t0) * 90000)

    def _compose_all(self, sources: dict[str, SourceFrame | None]) -> list[av.VideoFrame]:
        cache = ScaleCache()
        frames = []
        pts = self._pts()
        for view in self.views.values():
            frame = view.compositor.compose(sources, cache)
            frame.pts = pts
            frame.time_base = VIDEO_TIME_BASE
            frames.append(frame)
        return frames

    async def _compose_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.media.fps
        next_tick = loop.time()
        views = list(self.views.values())
        while True:
            now = loop.time()
            if now < next_tick:
                await asyncio.sleep(next_tick - now)
            elif now - next_tick > period:
                skipped = int((now - next_tick) / period)
                for v in views:
                    v.frames_skipped += skipped
                logger.warning("lesson %s: composition %d frame(s) late, skipping",
                               self.lesson.lesson_id, skipped)
                next_tick += skipped * period
            next_tick += period
            sources: dict[str, SourceFrame | None] = {
                cid: vin.latest for cid, vin in self._video.items()
            }
            self._direct()
            teacher = sources.get(self.lesson.main)
            self.tick_phase.observe(time.monotonic(),
                                    teacher.received_at if teacher is not None else None)
            next_tick += self.tick_phase.shift()
            frames = await loop.run_in_executor(self._compose_pool, self._compose_all, sources)
            self._observe_video_ages(sources, frames[0].pts if frames else None)
            encoded = await asyncio.gather(
                *(
                    loop.run_in_executor(self._encode_pool, _encode_view, v, f)
                    for v, f in zip(views, frames, strict=True)
                )
            )
            now = time.monotonic()
            for view, (packets, low) in zip(views, encoded, strict=True):
                view.frames_composed += 1
                self._publish_layout(view)
                assert view.renditions is not None
                view.renditions.fan_out(packets, low, view.subscribers)
                for packet in packets:
                    for listener in self.packet_listeners[view.name]:
                        listener(packet)
                view.renditions.tick(now)

    def _observe_video_ages(self, sources: dict[str, SourceFrame | None],
                            pts: int | None) -> None:
        """Each classroom's picture age in this composed frame, for its audio's lip sync."""
        if pts is None:
            return
        at_s = self.t0_epoch_ms / 1000 + pts / 90000
        for cid, src in sources.items():
            ain = self._audio.get(cid)
            if ain is not None and src is not None and src.captured_at is not None:
                ain.sync.observe_video(at_s - src.captured_at)

    def _publish_layout(self, view: ViewOutput) -> None:
        placements = view.compositor.placements
        labels = {t.classroom_id: t.label for t in view.compositor.tiles}
        layout = Layout(
            view=view.name,
            width=self.media.width,
            height=self.media.height,
            placements=[
                Placement(
                    classroom_id=cid,
                    classroom_number=(COURSEWARE_NUMBER if cid == COURSEWARE
                                      else self.config.classroom_number(cid)),
                    label=labels.get(cid, cid),
                    x=r.x,
                    y=r.y,
                    w=r.w,
                    h=r.h,
                )
                for cid, r in sorted(placements.items())
            ],
        )
        if layout != view.last_layout:
            view.last_layout = layout
            if self._on_layout is not None:
                self._on_layout(view.name, layout)

    async def _audio_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = AUDIO_FRAME / AUDIO_RATE
        next_tick = loop.time()
        # Audio pts count from the same origin as video pts (self._t0), in samples.
        pts = round((time.monotonic() - self._t0) * AUDIO_RATE)
        while True:
            now = loop.time()
            if now < next_tick:
                await asyncio.sleep(next_tick - now)
            elif now - next_tick > 5 * period:
                self.audio_late_ticks += 1
                pts += round((now - next_tick) * AUDIO_RATE)  # stay on the clock
                next_tick = now
            next_tick += period
            self.audio_ticks += 1
            blocks: dict[str, np.ndarray | None] = {}
            at_s = self.t0_epoch_ms / 1000 + pts / AUDIO_RATE
            for cid, ain in self._audio.items():
                block = ain.pull(AUDIO_FRAME, at_s)
                blocks[cid] = block
                if block is not None:
                    ain.level_dbov = level_dbov(block)
            full, per_listener = mix_n_minus_1(blocks, list(self._audio_out),
                                               block_samples=AUDIO_FRAME)
            if self._encode_mixes:
                jobs = [(self._audio_out[cid], enc, per_listener[cid])
                        for cid, enc in self._mix_encoders.items() if cid in self._audio_out]
                encoded = await loop.run_in_executor(self._audio_pool, _encode_mixes,
                                                     jobs, pts)
                for track, packet in encoded:
                    track.put(packet)
            else:
                for cid, track in self._audio_out.items():
                    track.put(_audio_frame(per_listener[cid], pts))
            if self.full_mix_listeners:
                frame = _audio_frame(full, pts)
                for listener in self.full_mix_listeners:
                    listener(frame)
            pts += AUDIO_FRAME

    # -- stats --------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        return {
            "lesson_id": self.lesson.lesson_id,
            "views": {
                name: {
                    "frames_composed": v.frames_composed,
                    "frames_skipped": v.frames_skipped,
                    "subscribers": sorted(v.subscribers),
                    "delivered": {cid: t.delivered for cid, t in v.subscribers.items()},
                    "encoder": v.encoder.stats(),
                    "renditions": v.renditions.stats() if v.renditions else None,
                }
                for name, v in self.views.items()
            },
            "video_inputs": {cid: {"frames": v.frames, "stale_skipped": v.stale_skipped}
                             for cid, v in self._video.items()},
            "audio_inputs": {
                cid: {
                    "frames": a.frames,
                    "level_dbov": round(a.level_dbov, 1),
                    "dropped_samples": a.dropped_samples,
                    "underruns": a.underruns,
                    "concealed": a.concealed,
                    "buffered_ms": round(a.buffered / AUDIO_RATE * 1000, 1),
                    "lipsync": _lipsync_stats(a),
                }
                for cid, a in self._audio.items()
            },
            "encoders_created": self.encoders_created,
            "tick_phase": {
                "teacher_wait_ms": None if self.tick_phase.wait_s is None
                else round(self.tick_phase.wait_s * 1000, 1),
                "shifted_ms": round(self.tick_phase.shifted_s * 1000, 1),
            },
            "audio_ticks": self.audio_ticks,
            "audio_late_ticks": self.audio_late_ticks,
        }


def _lipsync_stats(a: AudioInput) -> dict[str, object]:
    s = a.sync

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {"video_age_ms": ms(s.video_age), "audio_age_ms": ms(s.audio_age),
            "error_ms": ms(s.error_s), "stretched_ms": ms(s.samples_stretched / AUDIO_RATE),
            "sender_reports": a.clock.reports if a.clock is not None else 0}


def _encode_view(view: ViewOutput, frame: av.VideoFrame) -> tuple[list[av.Packet],
                                                                   list[av.Packet]]:
    """Encode one composed frame of ``view``: (high, low rendition) packets."""
    if view.renditions is None:
        return view.encoder.encode(frame), []
    return view.renditions.encode(frame)


class MixEncoder:
    """Opus for one listener's N-1 mix: mono s16 48 kHz 20 ms blocks in, one packet each
    out, stamped with the block's pts (aiortc only packetizes it: ``OpusEncoder.pack``).

    aiortc's own sender-side encoder upmixes every block to stereo through a resampler and
    runs in the default executor, one thread hand-off per block per listener; this encodes
    mono and all listeners in one hand-off: about half the CPU (``benchmarks/mix_audio.py``).
    Packets carry no RFC 6465 audio-level extension (aiortc adds it only to frames it
    encodes; nothing of ours reads it).
    """

    def __init__(self, bitrate_kbps: int) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = bitrate_kbps * 1000
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = AUDIO_RATE
        codec.time_base = AUDIO_TIME_BASE
        codec.options = {"application": "voip"}
        self.codec: Any = codec

    def encode(self, samples: np.ndarray, pts: int) -> list[av.Packet]:
        packets: list[av.Packet] = self.codec.encode(_audio_frame(samples, pts))
        for packet in packets:
            # libopus reports pts minus its 312-sample look-ahead; the block's own pts keeps
            # the RTP clock on the mix's (aiortc's encoder also starts its stream at 0).
            packet.pts = pts
            packet.time_base = AUDIO_TIME_BASE
        return packets


def _encode_mixes(jobs: list[tuple[PacketQueueTrack, MixEncoder, np.ndarray]],
                  pts: int) -> list[tuple[PacketQueueTrack, av.Packet]]:
    """Encode every listener's block (worker thread); (track, packet) pairs to queue. A
    block that fails to encode is logged and skipped: one listener's 20 ms, not the mix."""
    out: list[tuple[PacketQueueTrack, av.Packet]] = []
    for track, enc, samples in jobs:
        try:
            out.extend((track, packet) for packet in enc.encode(samples, pts))
        except Exception as exc:  # one listener's failure must not stop everyone's audio
            logger.warning("mix for %s: Opus encode failed: %s", track.name, exc)
    return out


def _audio_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = pts
    frame.time_base = AUDIO_TIME_BASE
    return frame
