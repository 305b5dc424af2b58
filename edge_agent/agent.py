"""The classroom agent: devices ↔ WebRTC ↔ mixer, auto-join, reconnect, measurements.

A receiving classroom's agent needs no one at the PC: it connects to the mixer, waits
for its paired lesson to go live, joins, and leaves when the lesson ends. If the
connection drops it reconnects with exponential backoff. The main classroom's agent
also starts and ends the lesson (local control page or CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from syncclass.adapt import (
    GCC_UP_HOLD_S,
    AdaptPolicy,
    EncoderAdapter,
    LinkFeedback,
    RateController,
    RateMeter,
)
from syncclass.audio import BeepDetector, band_level_db, level_dbov, spectrum_peaks
from syncclass.codec import H264Encoder
from syncclass.config import ClassroomConfig, CountyConfig
from syncclass.errors import SyncClassError
from syncclass.protocol import (
    Answer,
    Direct,
    EndLesson,
    Error,
    Hello,
    IceServer,
    Layout,
    LessonInfo,
    LessonState,
    Offer,
    Pong,
    RaiseHand,
    Redirect,
    ShareCourseware,
    StartLesson,
    Stats,
    Welcome,
    encode,
    parse_server_message,
)
from syncclass.rtc import (
    audio_frame_to_mono,
    new_peer_connection,
    observe_rtcp_feedback,
    prefer_codec,
    recv_newest,
    route_keyframe_requests,
    selected_ice_pair,
    turn_ssl_context,
)
from syncclass.stats import median, percentile
from syncclass.timecode import read_timecode
from syncclass.transportcc import observe_transport_estimate, transport_congestion
from syncclass.turn import credential_refresh_in_s

from .classroom_pc import ClassroomPC, LessonView, apply_saved_devices
from .courseware import CoursewareSource, CoursewareTrack, open_courseware
from .rig import DeviceRig
from .sources import AudioSource, VideoSource
from .turn import choose_turn_server

logger = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 2.0
"""Longest wait between reconnects: a classroom whose link returns rejoins within a few
seconds (a mixer's rate limit, ``mixer.joins_per_min``, bounds a misbehaving agent)."""
CONNECT_TIMEOUT_S = 3.0
"""TCP/TLS connect timeout: a SYN lost on a dead link must not stall the next attempt."""
STATS_INTERVAL_S = 2.0
TURN_REFRESH_MARGIN_S = 3600.0
"""Join a lesson only with TURN credentials valid this much longer, s (longer than any
lesson; coturn ends a relay whose credential expired); else fetch fresh ones first."""
LATENCY_WINDOW = 450  # samples kept per source (30 s at 15 fps)
FREEZE_GAP_S = 0.5
"""A gap between received view frames longer than this counts as a freeze (s; as the
mixer's ``ops.freeze_gap_ms`` default)."""
AUDIO_GAP_S = 0.1
"""A gap between received 20 ms audio frames longer than this counts as an audio gap (s)."""


class AgentFatalError(SyncClassError):
    """The mixer refused this classroom for good (e.g. a wrong credential)."""


def now_ms() -> int:
    return int(time.time() * 1000)


class EncodedVideoTrack(MediaStreamTrack):
    """Camera frames encoded once by our H.264 encoder; aiortc only packetizes them."""

    kind = "video"

    def __init__(self, source: VideoSource, encoder: H264Encoder,
                 on_frame: Callable[[av.VideoFrame], None] | None = None) -> None:
        super().__init__()
        self.source = source
        self.encoder = encoder
        self.on_frame = on_frame
        self._pending: deque[av.Packet] = deque()

    async def recv(self) -> av.Packet:
        loop = asyncio.get_running_loop()
        while not self._pending:
            if self.readyState != "live":
                raise MediaStreamError
            frame = await self.source.read()
            if self.on_frame is not None:
                self.on_frame(frame)  # the local page's camera preview
            self._pending.extend(await loop.run_in_executor(None, self.encoder.encode, frame))
        return self._pending.popleft()


class SourceAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, source: AudioSource,
                 process: Callable[[av.AudioFrame], av.AudioFrame] | None = None) -> None:
        super().__init__()
        self.source = source
        self.process = process

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.source.read()
        # Echo cancellation, noise suppression, AGC, mute (edge_agent.classroom_pc).
        return self.process(frame) if self.process is not None else frame


FPS_WINDOW_S = 2.0
"""Window of the received frame rate reported to the mixer and on /api/status (s)."""


@dataclass
class SourceLatency:
    """Glass-to-glass latency samples of one source classroom seen in our view."""

    samples_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    all_ms: list[float] = field(default_factory=list)
    frames_read: int = 0
    last_capture_ms: int = 0
    advancing: int = 0
    """How many times the timecode moved forward."""

    def add(self, capture_ms: int, shown_ms: int) -> None:
        latency = float(shown_ms - capture_ms)
        self.samples_ms.append(latency)
        if len(self.all_ms) < 200_000:
            self.all_ms.append(latency)
        self.frames_read += 1
        if capture_ms > self.last_capture_ms:
            if self.last_capture_ms:
                self.advancing += 1
            self.last_capture_ms = capture_ms

    def summary(self) -> dict[str, float | int]:
        data = np.asarray(self.all_ms) if self.all_ms else np.zeros(0)
        out: dict[str, float | int] = {
            "frames_read": self.frames_read,
            "timecode_advances": self.advancing,
            "last_capture_ms": self.last_capture_ms,
        }
        if len(data):
            out.update(
                p50_ms=round(percentile(data, 50), 1),
                p95_ms=round(percentile(data, 95), 1),
                max_ms=round(float(data.max()), 1),
            )
        return out


@dataclass
class Reception:
    """What this classroom received during one lesson."""

    lesson_id: str
    started_mono: float = field(default_factory=time.monotonic)
    frames: int = 0
    frame_times: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    first_frame_mono: float | None = None
    last_frame_mono: float | None = None
    last_frame: av.VideoFrame | None = None
    latency: dict[str, SourceLatency] = field(default_factory=dict)
    audio_frames: int = 0
    audio_ring: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=50))
    audio_level_dbov: float = -127.0
    beeps: BeepDetector = field(default_factory=BeepDetector)
    audio_latency_ms: list[float] = field(default_factory=list)
    """Mouth-to-ear latency of each sync beep heard (synthetic sources beep together at
    epoch-aligned instants)."""
    stale_skipped: int = 0
    """Decoded view frames not shown because a newer one was already waiting."""
    freezes: int = 0
    """Gaps between received view frames longer than :data:`FREEZE_GAP_S`."""
    frozen_s: float = 0.0
    """Total time of those gaps, s."""
    max_video_gap_s: float = 0.0
    last_audio_mono: float | None = None
    audio_gaps: int = 0
    """Gaps between received audio frames longer than :data:`AUDIO_GAP_S`."""
    max_audio_gap_s: float = 0.0

    def note_video(self, mono: float) -> None:
        if self.last_frame_mono is not None:
            gap = mono - self.last_frame_mono
            self.max_video_gap_s = max(self.max_video_gap_s, gap)
            if gap > FREEZE_GAP_S:
                self.freezes += 1
                self.frozen_s += gap

    def note_audio(self, mono: float) -> None:
        if self.last_audio_mono is not None:
            gap = mono - self.last_audio_mono
            self.max_audio_gap_s = max(self.max_audio_gap_s, gap)
            if gap > AUDIO_GAP_S:
                self.audio_gaps += 1
        self.last_audio_mono = mono

    def fps(self, window_s: float = FPS_WINDOW_S, now: float | None = None) -> float:
        """Frames decoded per second over the last ``window_s`` seconds (monotonic clock).
        A burst after a stall counts as what it is, never as thousands of fps."""
        now = time.monotonic() if now is None else now
        recent = sum(1 for t in self.frame_times if now - window_s <= t <= now)
        return recent / window_s

    def mean_fps(self) -> float:
        if self.first_frame_mono is None or self.last_frame_mono is None or self.frames < 2:
            return 0.0
        span = self.last_frame_mono - self.first_frame_mono
        return (self.frames - 1) / span if span > 0 else 0.0

    def audio_peaks(self) -> list[float]:
        if not self.audio_ring:
            return []
        samples = np.concatenate(list(self.audio_ring))
        return [round(f, 1) for f, _ in spectrum_peaks(samples, 48000, count=6)]

    def tone_levels(self, tones: dict[str, float]) -> dict[str, float]:
        """Level (dB) of each classroom's synthetic tone in the last second we heard."""
        if not self.audio_ring:
            return {}
        samples = np.concatenate(list(self.audio_ring))
        return {cid: round(band_level_db(samples, 48000, hz), 1) for cid, hz in tones.items()}

    def summary(self, tones: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "lesson_id": self.lesson_id,
            "tone_levels_db": self.tone_levels(tones or {}),
            "frames_received": self.frames,
            "fps": round(self.mean_fps(), 2),
            "fps_recent": round(self.fps(), 2),
            "latency_ms": {cid: s.summary() for cid, s in sorted(self.latency.items())},
            "audio_frames_received": self.audio_frames,
            "stale_skipped": self.stale_skipped,
            "freezes": self.freezes,
            "frozen_s": round(self.frozen_s, 2),
            "max_video_gap_ms": round(self.max_video_gap_s * 1000, 1),
            "audio_gaps": self.audio_gaps,
            "max_audio_gap_ms": round(self.max_audio_gap_s * 1000, 1),
            "audio_level_dbov": round(self.audio_level_dbov, 1),
            "audio_peaks_hz": self.audio_peaks(),
            "audio_latency_ms": _percentiles(self.audio_latency_ms, keep=True),
        }


def _percentiles(values: list[float], keep: bool = False) -> dict[str, Any]:
    """Count, p50 and p95 of ``values`` (ms); with ``keep`` also the values themselves
    (the last 200), so that runs can be pooled."""
    if not values:
        return {"count": 0}
    data = np.asarray(values)
    out: dict[str, Any] = {"count": len(values),
                           "p50_ms": round(percentile(data, 50), 1),
                           "p95_ms": round(percentile(data, 95), 1)}
    if keep:
        out["samples"] = [round(float(v), 1) for v in values[-200:]]
    return out


class Agent:
    """One classroom's agent. ``await run()`` until ``stop()``."""

    def __init__(
        self,
        config: CountyConfig,
        classroom_id: str,
        *,
        mixer_url: str | None = None,
        token: str | None = None,
        out_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.number = config.classroom_number(classroom_id)
        self.rig = DeviceRig(apply_saved_devices(config.classroom(classroom_id)), self.number)
        """Camera, microphone, screen and speakers; the agent opens and closes them."""
        self.mixer_url = (mixer_url or config.mixer.url).rstrip("/")
        """The node the agent connects to next (several nodes: follows ``redirect``)."""
        cluster = config.mixer.cluster
        self.entry_urls = list(dict.fromkeys(
            [self.mixer_url, *(n.url.rstrip("/") for n in (cluster.nodes if cluster else []))]))
        """Where the agent starts: its mixer URL, then every node of ``mixer.cluster``
        (tried in turn while one is down)."""
        self._entry = 0
        self._redirect_url: str | None = None
        self.redirects = 0
        self.token = token or self.classroom.token
        self._ssl: ssl.SSLContext | bool = True
        if any(u.startswith("https") for u in self.entry_urls):
            # Verify the mixer's certificate and host name against mixer.ca_file (a county
            # CA or self-signed certificate), else the system trust store.
            self._ssl = ssl.create_default_context(cafile=config.mixer.ca_file)
        self.out_dir = out_dir
        self.tones = {c.id: c.devices.microphone.tone_hz or c.tone_hz for c in config.classrooms}
        camera = self.rig.video_source
        self.courseware: CoursewareSource | None = (
            open_courseware(self.classroom.devices.courseware)
            if self.classroom.role == "main" else None)
        """The teacher's courseware (双流), sent as a second video track when shared."""
        self.courseware_shared = False
        self._courseware_track: CoursewareTrack | None = None
        self.encoder = H264Encoder(
            camera.width, camera.height, camera.fps,
            config.media.uplink_bitrate_kbps, config.media.keyframe_interval_s,
            config.media.keyframe_min_interval_s,
        )
        self.uplink: RateController | None = None
        """The uplink's bitrate estimate in the current lesson (adaptation on)."""
        self.uplink_adapter: EncoderAdapter | None = None
        self.state = "disconnected"
        self.lesson: LessonInfo | None = None
        self.reception: Reception | None = None
        self.last_reception: dict[str, Any] | None = None
        self.layout: Layout | None = None
        self.reconnects = 0
        self.hands_raised = 0
        self.directing = "auto"
        """The last 导播 choice this (main) classroom sent: ``auto``, a classroom id or
        ``@courseware``."""
        self.errors: deque[dict[str, str | None]] = deque(maxlen=20)
        self.outputs: list[str] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pc: RTCPeerConnection | None = None
        self._rx_tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._waiters: list[Callable[[object], bool]] = []
        self._join_lock = asyncio.Lock()
        self._ice_servers: list[IceServer] = []
        """TURN relays from the last ``welcome``."""
        self._ice_refresh_mono = math.inf
        """After this (this process's monotonic clock, s) their credentials are too close to
        expiry to start a lesson with."""
        self.turn_url: str | None = None
        """The TURN URL the current peer connection gathers a relay through."""
        self.local = ClassroomPC(self.rig, self.lesson_view)
        """Mic chain (AEC, noise suppression, AGC, mute), screen strip, preview, devices."""

    # -- public ------------------------------------------------------------------------------
    @property
    def classroom(self) -> ClassroomConfig:
        """This classroom's config, with the devices now in use (the rig's)."""
        return self.rig.classroom

    @property
    def in_lesson(self) -> bool:
        return self._pc is not None

    def lesson_view(self) -> LessonView:
        """The connection and lesson as the classroom PC's screen strip shows them."""
        lesson, rx = self.lesson, self.reception
        latency = None
        if rx is not None:
            values = [median(s.samples_ms) for s in rx.latency.values() if s.samples_ms]
            latency = max(values) if values else None
        return LessonView(
            connected=self.state == "connected",
            lesson_live=lesson is not None and lesson.state == "live",
            subject=lesson.subject if lesson is not None else "",
            latency_ms=latency, hands_raised=self.hands_raised, in_lesson=self.in_lesson,
            last_frame_mono=rx.last_frame_mono if rx is not None else None)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Connect, join lessons, reconnect with backoff; returns after :meth:`stop`."""
        backoff = BACKOFF_INITIAL_S
        local_task = asyncio.create_task(self.local.run())
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                            connect=CONNECT_TIMEOUT_S * 2)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                redirects_in_a_row = 0
                while not self._stopping.is_set():
                    welcomed = await self._connect_once(http)
                    if self._stopping.is_set():
                        break
                    if self._redirect_url is not None:
                        # Several nodes: straight to the lesson's node (a loop of redirects,
                        # nodes disagreeing during a fail-over, backs off as usual).
                        self.mixer_url, self._redirect_url = self._redirect_url, None
                        redirects_in_a_row += 1
                        if redirects_in_a_row <= 2:
                            continue
                    else:
                        redirects_in_a_row = 0
                    if not welcomed and len(self.entry_urls) > 1:
                        # That node is down (or refused us): the next entry node next time.
                        self._entry = (self._entry + 1) % len(self.entry_urls)
                        self.mixer_url = self.entry_urls[self._entry]
                    backoff = BACKOFF_INITIAL_S if welcomed else min(backoff * 2, BACKOFF_MAX_S)
                    delay = backoff * random.uniform(0.8, 1.2)
                    self.reconnects += 1
                    logger.info("classroom %s: reconnecting in %.1f s", self.classroom.id, delay)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):  # not wait_for (3.11 bug)
                            await self._stopping.wait()
        finally:
            local_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await local_task
            await self._leave("agent stopping")
            self.local.close()
            self.rig.close()

    async def raise_hand(self) -> None:
        """Raise this (receiving) classroom's hand in its live lesson (举手)."""
        if self.classroom.role != "receiving":
            raise PermissionError("only receiving classrooms raise hands")
        if self._ws is None or self._ws.closed or self.state != "connected":
            raise ConnectionError("not connected to the mixer")
        if self.lesson is None or self.lesson.state != "live":
            raise LookupError("no live lesson")
        await self._send(RaiseHand())
        self.hands_raised += 1
        logger.info("classroom %s: hand raised", self.classroom.id)

    async def direct(self, source: str) -> None:
        """The teacher's 导播 button: feature ``source`` (a classroom of the lesson or
        ``@courseware``) in the students' view and the recording, or ``auto``."""
        if self.classroom.role != "main":
            raise PermissionError("only the main classroom directs")
        if self._ws is None or self._ws.closed or self.state != "connected":
            raise ConnectionError("not connected to the mixer")
        if self.lesson is None or self.lesson.state != "live":
            raise LookupError("no live lesson")
        await self._send(Direct(source=source))
        self.directing = source
        logger.info("classroom %s: directing %s", self.classroom.id, source)

    async def share_courseware(self, on: bool) -> None:
        """共享课件: start (True) or stop sending the courseware (main classroom with a
        configured courseware only). Remembered across rejoins; the mixer shows it once
        its pictures arrive."""
        if self.courseware is None:
            raise PermissionError("this classroom has no courseware configured "
                                  "(devices.courseware, main classroom only)")
        self.courseware_shared = on
        if self._courseware_track is not None:
            self._courseware_track.set_shared(on)
        if self._ws is not None and not self._ws.closed and self.state == "connected" \
                and self.lesson is not None and self.lesson.state == "live":
            await self._send(ShareCourseware(on=on))
        logger.info("classroom %s: courseware %s", self.classroom.id,
                    "shared" if on else "stopped")

    async def request(self, message: StartLesson | EndLesson, wait_s: float = 5.0) -> object:
        """Send a lesson command and wait for the mixer's lesson_state or error reply."""
        if self._ws is None or self._ws.closed or self.state != "connected":
            raise ConnectionError("not connected to the mixer")
        want = "live" if isinstance(message, StartLesson) else "ended"
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()

        def waiter(msg: object) -> bool:
            if (isinstance(msg, LessonState) and msg.lesson.state == want) or (isinstance(
                msg, Error
            ) and msg.ref == message.type):
                if not fut.done():
                    fut.set_result(msg)
                return True
            return False

        self._waiters.append(waiter)
        try:
            await self._send(message)
            async with asyncio.timeout(wait_s):  # not wait_for (3.11 swallows cancellation)
                return await fut
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def status(self) -> dict[str, Any]:
        return {
            "classroom_id": self.classroom.id,
            "name": self.classroom.name,
            "role": self.classroom.role,
            "state": self.state,
            "in_lesson": self.in_lesson,
            "lesson": self.lesson.model_dump() if self.lesson else None,
            "peer": self._pc.connectionState if self._pc else None,
            "ice": {"turn": self.turn_url,
                    "pair": selected_ice_pair(self._pc) if self._pc else None},
            "reconnects": self.reconnects,
            "redirects": self.redirects,
            "mixer_url": self.mixer_url,
            "hands_raised": self.hands_raised,
            "directing": self.directing,
            "courseware": None if self.courseware is None else {
                "shared": self.courseware_shared,
                "frames_sent": getattr(self._courseware_track, "frames_sent", 0),
                "changes": getattr(self._courseware_track, "changes", 0)},
            "local": self.local.status(),
            "reception": self.reception.summary(self.tones) if self.reception else None,
            "last_reception": self.last_reception,
            "layout": self.layout.model_dump() if self.layout else None,
            "encoder": self.encoder.stats(),
            "uplink": None if self.uplink is None else {
                "target_kbps": round(self.uplink.target_kbps(time.monotonic()), 1),
                "remb_kbps": self.uplink.remb_kbps, "loss": self.uplink.last_loss,
                "rtt_ms": self.uplink.rtt_ms,
                "estimate_kbps": self.uplink.estimate_kbps,
                "transport_cc": self._transport_cc_stats(),
                "changes": self.uplink_adapter.changes if self.uplink_adapter else 0},
            "errors": list(self.errors),
            "outputs": self.outputs,
        }

    def _transport_cc_stats(self) -> dict[str, Any] | None:
        """The sender-side estimator of the lesson's peer connection, if it runs."""
        for transceiver in self._pc.getTransceivers() if self._pc else []:
            cc = transport_congestion(transceiver.sender.transport)
            if cc is not None:
                return cc.stats()
        return None

    # -- signaling ---------------------------------------------------------------------------
    def _set_ice_servers(self, welcome: Welcome) -> None:
        """Keep ``welcome``'s TURN relays and when to fetch fresh credentials."""
        self._ice_servers = list(welcome.ice_servers)
        refresh_in = credential_refresh_in_s(welcome.ice_servers, welcome.server_time_ms,
                                             TURN_REFRESH_MARGIN_S)
        self._ice_refresh_mono = (math.inf if refresh_in is None
                                  else time.monotonic() + refresh_in)

    async def _send(self, message: Any) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_str(encode(message))

    async def _connect_once(self, http: aiohttp.ClientSession) -> bool:
        """One signaling connection; returns whether the mixer welcomed us."""
        welcomed = False
        url = self.mixer_url.replace("http", "ws", 1) + "/ws"
        try:
            # Twice the mixer's interval: aiohttp gives up when no byte arrives within half
            # the interval after its ping, and on a lossy link (5 % loss + 100 ms, one CI
            # run) 2 s of TCP retransmission backoff cut a healthy lesson. The mixer's own
            # heartbeat still marks a dead classroom absent at its pace.
            async with http.ws_connect(url, heartbeat=2 * self.config.mixer.heartbeat_s,
                                       max_msg_size=4 << 20, ssl=self._ssl) as ws:
                self._ws = ws
                await self._send(Hello(classroom_id=self.classroom.id, token=self.token))
                stats_task = asyncio.create_task(self._stats_loop())
                stop_task = asyncio.create_task(self._stopping.wait())
                try:
                    while True:
                        recv = asyncio.ensure_future(ws.receive())
                        done, _ = await asyncio.wait(
                            {recv, stop_task}, return_when=asyncio.FIRST_COMPLETED
                        )
                        if stop_task in done:
                            recv.cancel()
                            break
                        msg = recv.result()
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        message = parse_server_message(msg.data)
                        if isinstance(message, Welcome):
                            welcomed = True
                        await self._handle(message)
                finally:
                    stats_task.cancel()
                    stop_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await stats_task
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.warning("classroom %s: mixer unreachable at %s: %s", self.classroom.id, url,
                           exc)
        finally:
            self._ws = None
            if self.state != "refused":
                self.state = "disconnected"
            await self._leave("signaling connection lost")
        return welcomed

    async def _handle(self, message: object) -> None:
        for waiter in list(self._waiters):
            waiter(message)
        if isinstance(message, Welcome):
            self._set_ice_servers(message)
            self.state = "connected"
            logger.info("classroom %s: welcomed (lesson %s)", self.classroom.id,
                        message.lesson.state if message.lesson else None)
            await self._lesson_update(message.lesson)
        elif isinstance(message, LessonState):
            await self._lesson_update(message.lesson)
        elif isinstance(message, Answer):
            if self._pc is not None:
                await self._pc.setRemoteDescription(
                    RTCSessionDescription(sdp=message.sdp, type="answer")
                )
        elif isinstance(message, Layout):
            self.layout = message
        elif isinstance(message, Error):
            self.errors.append({"code": message.code, "message": message.message,
                                "ref": message.ref})
            logger.warning("classroom %s: mixer says %s: %s", self.classroom.id, message.code,
                           message.message)
            if message.code == "auth_failed":
                self.state = "refused"
                self.stop()
        elif isinstance(message, Pong):
            pass
        elif isinstance(message, Redirect):
            await self._redirected(message)

    async def _redirected(self, message: Redirect) -> None:
        """Several nodes: the lesson is on another node. Followed only to a node the
        county config lists; any other URL is refused (a forged or stale message must not
        send the classroom's credential elsewhere)."""
        cluster = self.config.mixer.cluster
        if cluster is None or not cluster.vouches_for(message.url):
            logger.error("classroom %s: redirect to %r refused: not a node of "
                         "mixer.cluster.nodes", self.classroom.id, message.url)
            self.errors.append({"code": "bad_redirect", "message": message.url, "ref": None})
            return
        logger.info("classroom %s: lesson on node %s (%s); connecting there",
                    self.classroom.id, message.node_id, message.url)
        self.redirects += 1
        self._redirect_url = message.url.rstrip("/")
        if self._ws is not None:
            await self._ws.close()

    async def _lesson_update(self, lesson: LessonInfo | None) -> None:
        self.lesson = lesson
        mine = lesson is not None and self.classroom.id in (lesson.main, *lesson.receiving)
        if lesson is not None and lesson.state == "live" and mine:
            if self._pc is None:
                await self._join(lesson)
        elif self._pc is not None:
            await self._leave("lesson ended")

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            rx = self.reception
            if rx is None:
                continue
            latency = {
                cid: median(s.samples_ms) for cid, s in rx.latency.items()
                if s.samples_ms
            }
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._send(Stats(frames_received=rx.frames, fps=round(rx.fps(), 2),
                                       latency_ms=latency, reconnects=self.reconnects))

    # -- media -------------------------------------------------------------------------------
    async def _join(self, lesson: LessonInfo) -> None:
        async with self._join_lock:
            if self._pc is not None:
                return
            if time.monotonic() >= self._ice_refresh_mono:
                # coturn ends a relay when its credential expires: reconnect signaling for
                # a fresh welcome (which joins this lesson again) rather than lose the
                # lesson's media midway.
                logger.info("classroom %s: TURN credentials expire soon; reconnecting for "
                            "fresh ones", self.classroom.id)
                self._ice_refresh_mono = math.inf
                if self._ws is not None:
                    await self._ws.close()
                return
            logger.info("classroom %s: joining lesson %s", self.classroom.id, lesson.lesson_id)
            ice = await choose_turn_server(self._ice_servers, turn_ssl_context())
            self.turn_url = str(ice[0].urls) if ice else None
            pc = new_peer_connection(ice)
            self._pc = pc
            self.reception = Reception(lesson.lesson_id)
            video = EncodedVideoTrack(self.rig.video_source, self.encoder,
                                      self.local.camera_frame)
            audio = SourceAudioTrack(self.rig.audio_source, self.local.process_mic)
            self.rig.attach(video, audio)
            vsender = pc.addTrack(video)
            pc.addTrack(audio)
            if self.courseware is not None:
                # Always offered (sendonly), so sharing needs no renegotiation.
                cw = self.classroom.devices.courseware
                ctrack = CoursewareTrack(self.courseware, max_fps=cw.max_fps,
                                         idle_fps=cw.idle_fps, bitrate_kbps=cw.bitrate_kbps,
                                         keyframe_interval_s=self.config.media.keyframe_interval_s)
                ctrack.set_shared(self.courseware_shared)
                self._courseware_track = ctrack
                csender = pc.addTransceiver(ctrack, direction="sendonly").sender
                route_keyframe_requests(csender, ctrack.encoder.request_keyframe)
            for t in pc.getTransceivers():
                if t.kind == "video":
                    prefer_codec(t, "video/H264")
            route_keyframe_requests(vsender, self.encoder.request_keyframe)
            if self.config.media.adaptation.enabled:
                follow = self._follow_uplink()
                observe_rtcp_feedback(vsender, follow)
                if self.config.media.adaptation.estimator == "gcc":
                    observe_transport_estimate(vsender, follow)

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                reader = self._read_video if track.kind == "video" else self._read_audio
                task = asyncio.ensure_future(reader(track))
                self._rx_tasks.add(task)
                task.add_done_callback(self._rx_tasks.discard)

            @pc.on("connectionstatechange")
            async def on_state() -> None:
                logger.info("classroom %s: peer %s", self.classroom.id, pc.connectionState)
                if pc.connectionState == "failed" and self._pc is pc:
                    await self._leave("peer connection failed")
                    if self.lesson is not None and self.lesson.state == "live":
                        await asyncio.sleep(BACKOFF_INITIAL_S)
                        await self._lesson_update(self.lesson)

            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)  # gathers candidates (no trickle ICE)
            await self._send(Offer(sdp=pc.localDescription.sdp))
            if self.courseware_shared:
                await self._send(ShareCourseware(on=True))

    def _follow_uplink(self) -> Callable[[LinkFeedback], None]:
        """Adapt the camera encoder to the uplink's estimate (:mod:`syncclass.adapt`):
        bitrate first, then picture size, then frame rate. Each lesson starts in full."""
        enc, media = self.encoder, self.config.media
        policy = AdaptPolicy(min_bitrate_kbps=media.adaptation.min_bitrate_kbps)
        control = RateController(media.uplink_bitrate_kbps, policy)
        adapter = EncoderAdapter(enc.width, enc.height, enc.fps, media.uplink_bitrate_kbps,
                                 policy)
        if media.adaptation.estimator == "gcc":
            # The sender-side estimate starts low and grows in seconds (fast start):
            # starting the encoder at full rate would fill a thin link's queue first.
            policy = dataclasses.replace(policy, up_hold_s=GCC_UP_HOLD_S)
            control.policy = adapter.policy = policy
            start = adapter.reset(min(media.adaptation.start_kbps,
                                      media.uplink_bitrate_kbps), time.monotonic())
            enc.bitrate_kbps = start.bitrate_kbps
            enc.set_output(start.width, start.height, start.fps)
        else:
            enc.bitrate_kbps = media.uplink_bitrate_kbps
            enc.set_output(enc.width, enc.height, enc.fps)
        self.uplink, self.uplink_adapter = control, adapter
        sent = RateMeter()
        sent.add(enc.bytes_out, time.monotonic())  # the first feedback then knows the rate

        def on_feedback(feedback: LinkFeedback) -> None:
            now = time.monotonic()
            sent.add(enc.bytes_out, now)
            control.on_feedback(feedback, now, sent.kbps() or None)
            settings = adapter.update(control.target_kbps(now), now)
            if settings is not None:
                logger.info("classroom %s: uplink %d kbps %dx%d @ %.1f fps (estimate %s, "
                            "REMB %s, loss %.2f)", self.classroom.id, settings.bitrate_kbps,
                            settings.width, settings.height, settings.fps,
                            control.estimate_kbps and round(control.estimate_kbps),
                            control.remb_kbps, control.last_loss)
                enc.bitrate_kbps = settings.bitrate_kbps
                enc.set_output(settings.width, settings.height, settings.fps)

        return on_feedback

    async def _leave(self, why: str) -> None:
        pc, self._pc = self._pc, None
        if pc is None:
            return
        logger.info("classroom %s: leaving lesson (%s)", self.classroom.id, why)
        for track in self.rig.detach():
            track.stop()
        if self._courseware_track is not None:
            self._courseware_track.stop()
        await pc.close()
        for task in list(self._rx_tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.reception is not None:
            self.last_reception = self.reception.summary(self.tones)
            self._write_outputs(self.reception)
        self.reception = None

    async def _read_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                # Show the newest decoded picture: frames that piled up while this
                # process was busy are counted as received but not shown late.
                frame, skipped = await recv_newest(track)
                shown = now_ms()
                assert isinstance(frame, av.VideoFrame)
                rx = self.reception
                if rx is None:
                    continue
                mono = time.monotonic()
                rx.note_video(mono)
                rx.frames += 1 + skipped
                rx.stale_skipped += skipped
                rx.frame_times.extend([mono] * (1 + skipped))
                rx.first_frame_mono = rx.first_frame_mono or mono
                rx.last_frame_mono = mono
                rx.last_frame = frame
                self._measure(rx, frame, shown)
                self.rig.video_sink.write(frame)

    def _measure(self, rx: Reception, frame: av.VideoFrame, shown_ms: int) -> None:
        layout = self.layout
        if layout is None or frame.width != layout.width or frame.height != layout.height:
            return
        plane = frame.planes[0]
        y = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)
        for p in layout.placements:
            tc = read_timecode(y[p.y : p.y + p.h, p.x : p.x + p.w])
            if tc is not None and tc.source == p.classroom_number:
                rx.latency.setdefault(p.classroom_id, SourceLatency()).add(tc.capture_ms,
                                                                           shown_ms)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                rx = self.reception
                if rx is None:
                    continue
                rx.audio_frames += 1
                rx.note_audio(time.monotonic())
                heard_ms = time.time() * 1000
                mono = audio_frame_to_mono(frame)
                period = getattr(self.rig.audio_source, "sync_period_s", None)
                if period:
                    for onset in rx.beeps.feed(mono, heard_ms):
                        mark = round(onset / 1000 / period) * period * 1000
                        if 0 <= onset - mark < 2000:
                            rx.audio_latency_ms.append(onset - mark)
                rx.audio_ring.append(mono)
                rx.audio_level_dbov = level_dbov(mono)
                self.rig.audio_sink.write(frame)

    def _write_outputs(self, rx: Reception) -> None:
        if self.out_dir is None:
            return
        import cv2

        self.out_dir.mkdir(parents=True, exist_ok=True)
        base = self.out_dir / self.classroom.id
        summary = {"classroom_id": self.classroom.id, "name": self.classroom.name,
                   "role": self.classroom.role, **rx.summary(self.tones),
                   "view": self.layout.view if self.layout else None}
        # Written whole under a temporary name, then renamed: whoever waits for these files
        # (the demo, tests, an operator's script) never reads half of one (a CI run read a
        # truncated PNG once).
        if rx.last_frame is not None:
            png = base.with_suffix(".png")
            ok, encoded = cv2.imencode(".png", rx.last_frame.to_ndarray(format="bgr24"))
            if ok:
                _write_atomically(png, encoded.tobytes())
                summary["png"] = str(png)
                self.outputs.append(str(png))
        js = base.with_suffix(".json")
        _write_atomically(js, json.dumps(summary, indent=2, ensure_ascii=False).encode())
        self.outputs.append(str(js))
        logger.info("classroom %s: wrote %s", self.classroom.id, js)


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` to ``path`` via a temporary file in the same directory and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
