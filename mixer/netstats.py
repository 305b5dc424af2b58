"""Health of every classroom and of the mixer, sampled once per ``ops.sample_interval_s``.

:class:`NetStatsCollector` is the one place that turns raw counters into rates:

- network: ``await pc.getStats()`` of each classroom's peer connection (aiortc):
  ``inbound-rtp`` (uplink packets received/lost, jitter), ``remote-inbound-rtp`` (what the
  classroom reports about our packets: RTT, downlink loss) and the transport's bytes;
- media: :meth:`LessonMedia.stats` (frames in per camera, packets delivered per view
  subscriber, audio level, encode time, skipped frames) and a video tap that counts
  freezes (gaps between received camera frames longer than ``ops.freeze_gap_ms``);
- the agents' ``stats`` messages (glass-to-glass latency of what they receive, reconnects).

API for the dashboard, ``/metrics``, alerts and analytics: :meth:`snapshot` →
``{classroom_id: ClassroomHealth}``, :meth:`history` (bounded: ``ops.history_s``),
:meth:`mixer_health`, and ``on_sample`` callbacks run after each sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import av
import psutil

from syncclass.config import OpsConfig, OpsThresholds
from syncclass.events import Event

if TYPE_CHECKING:
    from .core import Mixer
    from .media import LessonMedia

logger = logging.getLogger(__name__)

CLOCK_RATE_HZ = {"video": 90000, "audio": 48000}
"""RTP clock rates: aiortc reports jitter in RTP timestamp units."""


@dataclass
class ClassroomHealth:
    """One sample of one classroom. ``None``: not measurable now (e.g. not in a lesson)."""

    classroom_id: str
    name: str
    role: str
    ts_ms: int
    """Epoch ms of the sample."""
    state: str
    """``offline`` (no signaling connection), ``waiting`` (connected, not in a lesson),
    ``joining``, ``in_lesson``, or the peer connection's ``failed``/``closed``."""
    lesson_id: str | None = None
    rtt_ms: float | None = None
    """Round-trip time mixer ↔ classroom from RTCP receiver reports, ms."""
    jitter_ms: float | None = None
    """Interarrival jitter of the classroom's uplink (worst of audio and video), ms."""
    loss_in_percent: float | None = None
    """Uplink packets lost (classroom → mixer) over the last interval, %."""
    loss_out_percent: float | None = None
    """Downlink packets lost (mixer → classroom) as the classroom reports, over the last
    RTCP reports' interval, %."""
    bitrate_in_kbps: float | None = None
    """What the mixer receives from the classroom, kbit/s (transport bytes incl. headers)."""
    bitrate_out_kbps: float | None = None
    fps_in: float | None = None
    """Camera frames the mixer decoded from this classroom, frames/s."""
    fps_out: float | None = None
    """Video packets (frames) of its view the mixer sent to this classroom, frames/s."""
    fps_received: float | None = None
    """Frame rate the classroom reports decoding, frames/s."""
    frames_in: int = 0
    """Camera frames decoded from this classroom in the current lesson."""
    latency_ms: float | None = None
    """Glass-to-glass latency the classroom reports (worst source it shows), ms."""
    latency_by_source_ms: dict[str, float] = field(default_factory=dict)
    audio_level_dbov: float | None = None
    freezes: int = 0
    """Gaps longer than ``ops.freeze_gap_ms`` in its camera frames, this lesson."""
    frozen: bool = False
    """Its camera has sent no frame for longer than ``ops.freeze_gap_ms`` right now."""
    reconnects: int = 0
    """Signaling reconnections (the larger of the agent's count and the mixer's)."""
    level: str = "ok"
    """``ok``, ``amber``, ``red`` or ``offline`` (see :func:`grade`)."""
    problems: list[str] = field(default_factory=list)
    """What is over a threshold, e.g. ``latency_red``, ``loss``."""

    @property
    def loss_percent(self) -> float | None:
        values = [v for v in (self.loss_in_percent, self.loss_out_percent) if v is not None]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss_percent"] = self.loss_percent
        return d


@dataclass
class ViewHealth:
    lesson_id: str
    view: str
    fps: float
    """Composed and encoded frames per second over the last interval."""
    encode_ms: float
    """Mean encode time per frame over the last interval, ms."""
    frames_skipped: int
    """Frames the compositor skipped because it was late, since the lesson started."""
    subscribers: int
    bitrate_kbps: float


@dataclass
class MixerHealth:
    ts_ms: int
    cpu_percent: float
    """Mixer process CPU over the last interval, % of one core."""
    rss_mb: float
    loop_lag_ms: float
    """How late the sampler woke up: a blocked event loop shows here, ms."""
    lessons: list[dict[str, Any]] = field(default_factory=list)
    """Lessons with ``elapsed_s`` (live: since start; ended: its length)."""
    views: list[ViewHealth] = field(default_factory=list)
    audio_late_ticks: int = 0
    recorder: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grade(h: ClassroomHealth, t: OpsThresholds) -> tuple[str, list[str]]:
    """Level and problems of a sample: red beats amber beats ok."""
    if h.state == "offline":
        return ("offline" if h.lesson_id else "ok"), (["offline"] if h.lesson_id else [])
    red: list[str] = []
    amber: list[str] = []
    if h.state in ("failed", "closed"):
        red.append("peer_" + h.state)
    if h.state == "waiting" and h.lesson_id:
        red.append("not_in_lesson")
    if h.latency_ms is not None:
        if h.latency_ms > t.latency_red_ms:
            red.append("latency_red")
        elif h.latency_ms > t.latency_amber_ms:
            amber.append("latency_amber")
    loss = h.loss_percent
    if loss is not None and loss > t.loss_percent:
        red.append("loss")
    if h.jitter_ms is not None and h.jitter_ms > t.jitter_ms:
        amber.append("jitter")
    if h.state == "in_lesson":
        if h.frozen:
            red.append("frozen")
        elif h.fps_in is not None and h.fps_in < t.min_fps:
            amber.append("low_fps")
    if red:
        return "red", red + amber
    return ("amber", amber) if amber else ("ok", [])


@dataclass
class _Prev:
    """Counters of the previous sample of one classroom's peer connection."""

    pc_id: int
    t: float
    bytes_in: int = 0
    bytes_out: int = 0
    rx_packets: int = 0
    rx_lost: int = 0
    remote_packets: int = 0
    remote_lost: int = 0
    frames_in: int = 0
    delivered: int = 0


class NetStatsCollector:
    """Samples every classroom's health; ``start()`` then ``aclose()``."""

    def __init__(self, mixer: Mixer, ops: OpsConfig) -> None:
        self.mixer = mixer
        self.ops = ops
        self.interval_s = ops.sample_interval_s
        n = max(2, int(ops.history_s / ops.sample_interval_s))
        self._history: dict[str, deque[ClassroomHealth]] = {}
        self._mixer_history: deque[MixerHealth] = deque(maxlen=n)
        self._maxlen = n
        self._latest: dict[str, ClassroomHealth] = {}
        self._latest_mixer: MixerHealth | None = None
        self._prev: dict[str, _Prev] = {}
        self._prev_views: dict[tuple[str, str], tuple[float, float, float, float]] = {}
        self._last_frame: dict[str, float] = {}
        self._frozen: dict[str, bool] = {}
        self._freezes: dict[str, int] = {}
        self._freeze_lesson: dict[str, str] = {}
        self._connections: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._proc = psutil.Process()
        self._proc.cpu_percent(None)
        self.on_sample: list[Callable[[dict[str, ClassroomHealth], MixerHealth], None]] = []
        """Called after each sample (alerts, dashboard push); must not block."""
        self.recorder_state: Callable[[], dict[str, Any] | None] | None = None
        """Set by the recorder integration to show its state on the dashboard."""
        self.samples = 0
        mixer.on_media_created.append(self._media_created)
        mixer.events.subscribe(self._on_event)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
            self._task.set_name("netstats")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(ValueError):
            self.mixer.on_media_created.remove(self._media_created)
        with contextlib.suppress(ValueError):
            self.mixer.events.unsubscribe(self._on_event)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_t = loop.time() + self.interval_s
        while True:
            await asyncio.sleep(max(0.0, next_t - loop.time()))
            lag_ms = max(0.0, (loop.time() - next_t) * 1000.0)
            next_t = max(next_t + self.interval_s, loop.time())
            try:
                await self.sample(lag_ms)
            except Exception:  # a sampling bug must not stop monitoring
                logger.exception("health sample failed")

    # -- inputs -------------------------------------------------------------------------------
    def _media_created(self, media: LessonMedia) -> None:
        media.video_taps.append(self._on_frame)

    def _on_frame(self, classroom_id: str, frame: av.VideoFrame) -> None:
        now = time.monotonic()
        last = self._last_frame.get(classroom_id)
        if self._frozen.get(classroom_id):
            self._frozen[classroom_id] = False  # already counted when it was seen frozen
        elif last is not None and (now - last) * 1000.0 > self.ops.freeze_gap_ms:
            self._freezes[classroom_id] = self._freezes.get(classroom_id, 0) + 1
        self._last_frame[classroom_id] = now

    def _on_event(self, event: Event) -> None:
        if event.name == "classroom_connected" and event.classroom_id:
            self._connections[event.classroom_id] = self._connections.get(
                event.classroom_id, 0) + 1

    # -- outputs ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, ClassroomHealth]:
        """Latest health of every configured classroom (empty before the first sample)."""
        return dict(self._latest)

    def history(self, classroom_id: str) -> list[ClassroomHealth]:
        """Samples of one classroom, oldest first, at most ``ops.history_s`` back."""
        return list(self._history.get(classroom_id, ()))

    def mixer_health(self) -> MixerHealth | None:
        return self._latest_mixer

    def mixer_history(self) -> list[MixerHealth]:
        return list(self._mixer_history)

    # -- sampling -----------------------------------------------------------------------------
    async def sample(self, loop_lag_ms: float = 0.0) -> dict[str, ClassroomHealth]:
        """Take one sample now (the loop calls this; tests may too)."""
        now = time.monotonic()
        ts_ms = int(time.time() * 1000)
        media_stats = {lid: m.stats() for lid, m in self.mixer.media.items()}
        result: dict[str, ClassroomHealth] = {}
        for room in self.mixer.config.classrooms:
            h = await self._sample_classroom(room.id, room.name, room.role, now, ts_ms,
                                             media_stats)
            h.level, h.problems = grade(h, self.ops.thresholds)
            result[room.id] = h
            hist = self._history.setdefault(room.id, deque(maxlen=self._maxlen))
            hist.append(h)
        mh = self._sample_mixer(now, ts_ms, loop_lag_ms, media_stats)
        self._latest = result
        self._latest_mixer = mh
        self._mixer_history.append(mh)
        self.samples += 1
        for cb in list(self.on_sample):
            try:
                cb(result, mh)
            except Exception:
                logger.exception("health subscriber failed")
        return result

    async def _sample_classroom(self, cid: str, name: str, role: str, now: float, ts_ms: int,
                                media_stats: dict[str, dict[str, Any]]) -> ClassroomHealth:
        lesson = self.mixer.lessons.lesson_of(cid)
        lesson_id = lesson.lesson_id if lesson is not None and lesson.state == "live" else None
        session = self.mixer.sessions.get(cid)
        h = ClassroomHealth(classroom_id=cid, name=name, role=role, ts_ms=ts_ms,
                            state="offline", lesson_id=lesson_id)
        h.reconnects = max(0, self._connections.get(cid, 0) - 1)
        if self._freeze_lesson.get(cid) != lesson_id:
            self._freeze_lesson[cid] = lesson_id or ""
            self._freezes[cid] = 0
            self._last_frame.pop(cid, None)
            self._frozen[cid] = False
        h.freezes = self._freezes.get(cid, 0)
        if session is None:
            self._prev.pop(cid, None)
            return h
        agent = session.stats
        reported = agent.get("reconnects")
        if isinstance(reported, int):
            h.reconnects = max(h.reconnects, reported)
        pc = session.pc
        if pc is None or session.lesson_id is None:
            h.state = "waiting"
            self._prev.pop(cid, None)
            return h
        h.state = {"connected": "in_lesson", "new": "joining", "connecting": "joining"}.get(
            pc.connectionState, pc.connectionState)
        fps = agent.get("fps")
        h.fps_received = float(fps) if isinstance(fps, int | float) else None
        lat = agent.get("latency_ms")
        if isinstance(lat, dict) and lat:
            h.latency_by_source_ms = {str(k): round(float(v), 1) for k, v in lat.items()}
            h.latency_ms = max(h.latency_by_source_ms.values())
        ms = media_stats.get(session.lesson_id, {})
        vin = ms.get("video_inputs", {}).get(cid)
        frames_in = int(vin["frames"]) if vin else 0
        h.frames_in = frames_in
        ain = ms.get("audio_inputs", {}).get(cid)
        if ain:
            h.audio_level_dbov = float(ain["level_dbov"])
        delivered = 0
        for view in ms.get("views", {}).values():
            delivered += int(view.get("delivered", {}).get(cid, 0))
        last = self._last_frame.get(cid)
        if h.state == "in_lesson" and last is not None and (
            now - last) * 1000.0 > self.ops.freeze_gap_ms:
            if not self._frozen.get(cid):
                self._frozen[cid] = True
                self._freezes[cid] = self._freezes.get(cid, 0) + 1
            h.frozen = True
        h.freezes = self._freezes.get(cid, 0)

        report: Any
        try:
            report = await pc.getStats()
        except Exception as exc:  # a closing peer can fail mid-way; keep the media numbers
            logger.debug("classroom %s: getStats failed: %s", cid, exc)
            report = {}
        cur = _Prev(pc_id=id(pc), t=now, frames_in=frames_in, delivered=delivered)
        rtts: list[float] = []
        jitters: list[float] = []
        transports: dict[str, Any] = {}
        for s in report.values():
            kind = getattr(s, "type", "")
            if kind == "inbound-rtp":
                cur.rx_packets += int(s.packetsReceived)
                cur.rx_lost += max(0, int(s.packetsLost))
                rate = CLOCK_RATE_HZ.get(s.kind, 90000)
                jitters.append(1000.0 * float(s.jitter) / rate)
            elif kind == "remote-inbound-rtp":
                cur.remote_packets += max(0, int(s.packetsReceived))
                cur.remote_lost += max(0, int(s.packetsLost))
                if s.roundTripTime is not None:
                    rtts.append(1000.0 * float(s.roundTripTime))
            elif kind == "transport":
                transports[s.id] = s
        for t in transports.values():
            cur.bytes_in += int(t.bytesReceived)
            cur.bytes_out += int(t.bytesSent)
        h.rtt_ms = round(max(rtts), 1) if rtts else None
        h.jitter_ms = round(max(jitters), 1) if jitters else None
        prev = self._prev.get(cid)
        self._prev[cid] = cur
        if prev is None or prev.pc_id != cur.pc_id or cur.t - prev.t <= 0:
            return h
        dt = cur.t - prev.t
        h.bitrate_in_kbps = round(max(0, cur.bytes_in - prev.bytes_in) * 8 / dt / 1000, 1)
        h.bitrate_out_kbps = round(max(0, cur.bytes_out - prev.bytes_out) * 8 / dt / 1000, 1)
        h.fps_in = round(max(0, cur.frames_in - prev.frames_in) / dt, 1)
        h.fps_out = round(max(0, cur.delivered - prev.delivered) / dt, 1)
        h.loss_in_percent = _loss(cur.rx_packets - prev.rx_packets, cur.rx_lost - prev.rx_lost)
        h.loss_out_percent = _loss(cur.remote_packets - prev.remote_packets,
                                   cur.remote_lost - prev.remote_lost)
        return h

    def _sample_mixer(self, now: float, ts_ms: int, loop_lag_ms: float,
                      media_stats: dict[str, dict[str, Any]]) -> MixerHealth:
        mem = 0.0
        with contextlib.suppress(psutil.Error):
            mem = self._proc.memory_info().rss / 2**20
        cpu = 0.0
        with contextlib.suppress(psutil.Error):
            cpu = self._proc.cpu_percent(None)
        lessons = []
        for lesson in self.mixer.lessons.all_lessons():
            info = lesson.info().model_dump()
            if lesson.started_ms is not None:
                end = lesson.ended_ms if lesson.ended_ms is not None else ts_ms
                info["elapsed_s"] = round((end - lesson.started_ms) / 1000.0, 1)
            else:
                info["elapsed_s"] = None
            lessons.append(info)
        views: list[ViewHealth] = []
        seen: set[tuple[str, str]] = set()
        audio_late = 0
        for lid, ms in media_stats.items():
            audio_late += int(ms.get("audio_late_ticks", 0))
            for vname, v in ms.get("views", {}).items():
                key = (lid, vname)
                seen.add(key)
                enc = v.get("encoder", {})
                cur = (now, float(enc.get("frames_in", 0)), float(enc.get("total_encode_ms", 0)),
                       float(v.get("frames_composed", 0)))
                prev = self._prev_views.get(key)
                self._prev_views[key] = cur
                fps = encode_ms = 0.0
                if prev is not None and cur[0] > prev[0]:
                    frames = cur[1] - prev[1]
                    fps = (cur[3] - prev[3]) / (cur[0] - prev[0])
                    encode_ms = (cur[2] - prev[2]) / frames if frames > 0 else 0.0
                views.append(ViewHealth(
                    lesson_id=lid, view=vname, fps=round(fps, 2), encode_ms=round(encode_ms, 2),
                    frames_skipped=int(v.get("frames_skipped", 0)),
                    subscribers=len(v.get("subscribers", [])),
                    bitrate_kbps=round(float(enc.get("bitrate_kbps", 0.0)), 1),
                ))
        for key in list(self._prev_views):
            if key not in seen:
                del self._prev_views[key]
        recorder = None
        if self.recorder_state is not None:
            try:
                recorder = self.recorder_state()
            except Exception:
                logger.exception("recorder state callback failed")
        return MixerHealth(ts_ms=ts_ms, cpu_percent=round(cpu, 1), rss_mb=round(mem, 1),
                           loop_lag_ms=round(loop_lag_ms, 1), lessons=lessons, views=views,
                           audio_late_ticks=audio_late, recorder=recorder)


def _loss(received: int, lost: int) -> float | None:
    total = received + max(0, lost)
    if total <= 0:
        return None
    return round(100.0 * max(0, lost) / total, 2)
