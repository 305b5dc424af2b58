"""What the agent does on the classroom PC itself: the microphone chain (echo
cancellation against the speakers, noise suppression, AGC, mute, level), the screen's
status strip, the camera preview for the local page, and the teacher's device choice
(kept across restarts).

:class:`ClassroomPC` is owned by :class:`edge_agent.agent.Agent`; its :meth:`run` task
runs as long as the agent does. It works on the agent's :class:`~edge_agent.rig.DeviceRig`
and reads the lesson through a :class:`LessonView` the agent hands it; it knows nothing
else of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from pydantic import ValidationError

from syncclass import switches
from syncclass.audio import level_dbov
from syncclass.config import AudioDeviceConfig, ClassroomConfig, SinkConfig, VideoDeviceConfig
from syncclass.errors import DeviceError

from .audio_processing import AudioProcessor, AudioProcessorOptions
from .rig import DeviceRig
from .screen import ScreenStatus, ScreenVideoSink
from .sinks import AudioSink
from .speakers import SpeakerAudioSink

__all__ = ["ClassroomPC", "LessonView", "apply_saved_devices", "state_dir"]

logger = logging.getLogger(__name__)

SCREEN_REFRESH_S = 0.5
"""How often the screen's status strip is redrawn when no video arrives, s."""
HAND_SHOWN_S = 30.0
"""How long the strip shows a raised hand, s."""
PREVIEW_MAX_AGE_S = 1.0
"""A camera frame older than this is not used as the preview; a fresh one is read, s."""


def state_dir() -> Path:
    """Where the agent keeps local state (the device choice): ``$SYNCCLASS_STATE_DIR``, else
    ``%LOCALAPPDATA%\\syncclass`` on Windows, else ``~/.local/state/syncclass``
    (:mod:`syncclass.switches`; read on each use, so a test may point it elsewhere)."""
    return switches.current().state_dir


def _choice_file(classroom_id: str) -> Path:
    return state_dir() / f"devices-{classroom_id}.json"


def apply_saved_devices(room: ClassroomConfig) -> ClassroomConfig:
    """``room`` with the devices chosen on the local page (saved by :class:`ClassroomPC`)
    in place of the config's; an unreadable choice file is logged and ignored."""
    path = _choice_file(room.id)
    if not path.is_file():
        return room
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        devices = room.devices.model_copy(update={
            "camera": VideoDeviceConfig(**saved["camera"]) if "camera" in saved
            else room.devices.camera,
            "microphone": AudioDeviceConfig(**saved["microphone"]) if "microphone" in saved
            else room.devices.microphone,
            "speakers": SinkConfig(**saved["speakers"]) if "speakers" in saved
            else room.devices.speakers,
        })
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        logger.warning("classroom %s: ignoring saved device choice %s: %s", room.id, path, exc)
        return room
    logger.info("classroom %s: using the devices chosen on the local page (%s)", room.id, path)
    return room.model_copy(update={"devices": devices})


def _processor_for(cfg: AudioDeviceConfig) -> AudioProcessor | None:
    """Echo cancellation etc. for a real microphone (synthetic, file and script sources do
    not hear the speakers and must stay bit-exact for tests)."""
    if cfg.kind != "microphone" or not (cfg.aec or cfg.noise_suppression or cfg.agc):
        return None
    try:
        return AudioProcessor(AudioProcessorOptions(aec=cfg.aec,
                                                    noise_suppression=cfg.noise_suppression,
                                                    agc=cfg.agc))
    except DeviceError as exc:
        logger.error("%s: the microphone is sent WITHOUT echo cancellation", exc)
        return None


@dataclass(frozen=True)
class LessonView:
    """What the classroom PC shows of the agent's connection and lesson."""

    connected: bool
    """The mixer welcomed the agent."""
    lesson_live: bool
    """The mixer's lesson for this classroom is live."""
    subject: str
    """The lesson's subject ('' without a lesson)."""
    latency_ms: float | None
    """Worst median glass-to-glass latency of the sources in our view (ms), if measured."""
    hands_raised: int
    """Hands this classroom raised since the agent started."""
    in_lesson: bool
    """The agent is in the lesson (has a peer connection)."""
    last_frame_mono: float | None
    """When the last view frame arrived (monotonic s), in the current lesson."""


class ClassroomPC:
    """The local side of one agent: mic chain, screen strip, preview, device choice.

    ``rig`` holds the devices; ``lesson_view`` tells the agent's connection and lesson
    state (called for every status strip drawn).
    """

    def __init__(self, rig: DeviceRig, lesson_view: Callable[[], LessonView]) -> None:
        self.rig = rig
        self.lesson_view = lesson_view
        self.mic_muted = False
        self.mic_level_dbov = -127.0
        """Level of the last microphone frame sent (after processing), dBov."""
        self.last_camera_frame: av.VideoFrame | None = None
        self.last_camera_mono = 0.0
        self.processor = _processor_for(rig.classroom.devices.microphone)
        self._wire_speakers(rig.audio_sink)
        if isinstance(rig.video_sink, ScreenVideoSink):
            rig.video_sink.status = self.screen_status
        self._switch_lock = asyncio.Lock()
        self._hands_seen = lesson_view().hands_raised
        self._hand_mono: float | None = None

    @property
    def classroom_id(self) -> str:
        return self.rig.classroom.id

    def _wire_speakers(self, sink: AudioSink) -> None:
        if self.processor is not None and isinstance(sink, SpeakerAudioSink):
            sink.add_played_listener(self.processor.feed_reference)
        elif self.processor is not None and self.processor.options.aec:
            logger.warning("classroom %s: echo cancellation has no reference: the speakers "
                           "are not a sound device", self.classroom_id)

    # -- microphone ------------------------------------------------------------------------
    def process_mic(self, frame: av.AudioFrame) -> av.AudioFrame:
        """The frame to send: echo-cancelled / denoised / gain-controlled, or silence when
        muted (the level meter keeps showing the room)."""
        if self.processor is None and not self.mic_muted:
            self.mic_level_dbov = level_dbov(frame.to_ndarray().reshape(-1))
            return frame
        samples = frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)
        if self.processor is not None:
            samples = self.processor.process(samples, frame.pts)
        self.mic_level_dbov = level_dbov(samples)
        if self.mic_muted:
            samples = np.zeros_like(samples)
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = frame.sample_rate
        out.pts = frame.pts
        out.time_base = frame.time_base
        return out

    def set_muted(self, muted: bool) -> None:
        if muted != self.mic_muted:
            logger.info("classroom %s: microphone %s", self.classroom_id,
                        "muted" if muted else "unmuted")
        self.mic_muted = muted

    # -- camera preview --------------------------------------------------------------------
    def camera_frame(self, frame: av.VideoFrame) -> None:
        """Called with each camera frame the agent sends."""
        self.last_camera_frame = frame
        self.last_camera_mono = time.monotonic()

    async def preview_jpeg(self, width: int = 480) -> bytes:
        """The camera's current picture as a JPEG ``width`` px wide."""
        frame = self.last_camera_frame
        if frame is None or time.monotonic() - self.last_camera_mono > PREVIEW_MAX_AGE_S:
            # Not in a lesson: nobody reads the camera; read one frame ourselves.
            frame = await asyncio.wait_for(self.rig.video_source.read(), 5.0)
            self.camera_frame(frame)
        height = max(2, round(frame.height * width / frame.width) & ~1)

        def encode() -> bytes:
            bgr = frame.to_ndarray(width=width, height=height, format="bgr24")
            ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
            if not ok:
                raise DeviceError("camera preview: JPEG encoding failed")
            return bytes(jpg)

        return await asyncio.to_thread(encode)

    # -- screen ----------------------------------------------------------------------------
    def screen_status(self) -> ScreenStatus:
        view = self.lesson_view()
        lesson = f"上课中 live · {view.subject}" if view.lesson_live else ""
        return ScreenStatus(connected=view.connected, lesson=lesson, latency_ms=view.latency_ms,
                            hand_raised=self._hand_up(view), mic_level_dbov=self.mic_level_dbov,
                            mic_muted=self.mic_muted)

    def _hand_up(self, view: LessonView) -> bool:
        """This classroom raised its hand in the last ``HAND_SHOWN_S`` seconds of a live
        lesson. (The mixer does not tell the main classroom's agent about hands yet.)"""
        if view.hands_raised != self._hands_seen:
            self._hands_seen = view.hands_raised
            self._hand_mono = time.monotonic()
        return view.lesson_live and self._hand_mono is not None and (
            time.monotonic() - self._hand_mono < HAND_SHOWN_S)

    async def run(self) -> None:
        """Keep the screen's strip current while no video arrives; until cancelled."""
        sink = self.rig.video_sink
        if not isinstance(sink, ScreenVideoSink):
            return
        while True:
            await asyncio.sleep(SCREEN_REFRESH_S)
            view = self.lesson_view()
            recent = view.last_frame_mono is not None and (
                time.monotonic() - view.last_frame_mono < SCREEN_REFRESH_S)
            if not recent:
                sink.refresh(idle=not view.in_lesson)
            if sink.quit_requested:
                logger.info("classroom %s: screen closed; the agent keeps running",
                            self.classroom_id)
                sink.quit_requested = False

    # -- device choice ---------------------------------------------------------------------
    def devices(self) -> dict[str, Any]:
        d = self.rig.classroom.devices
        return {"camera": d.camera.model_dump(), "microphone": d.microphone.model_dump(),
                "speakers": d.speakers.model_dump(), "saved_in": str(
                    _choice_file(self.classroom_id))}

    async def choose(self, choice: dict[str, Any]) -> dict[str, Any]:
        """Switch to the devices in ``choice`` (``camera`` / ``microphone`` / ``speakers``:
        partial device configs) now, and keep the choice for the next start.

        Everything is opened before anything is replaced: a device that fails to open
        raises :class:`DeviceError` (``ValueError`` for a bad choice) and changes nothing.
        """
        unknown = set(choice) - {"camera", "microphone", "speakers"}
        if unknown or not choice:
            raise ValueError(f"choose camera, microphone and/or speakers (got {sorted(choice)})")
        rig = self.rig
        cur = rig.classroom.devices
        async with self._switch_lock:
            try:
                cam_cfg = VideoDeviceConfig(**{**_size(cur.camera), **choice["camera"]}) \
                    if "camera" in choice else None
                mic_cfg = AudioDeviceConfig(**{**_processing(cur.microphone),
                                               **choice["microphone"]}) \
                    if "microphone" in choice else None
                spk_cfg = SinkConfig(**choice["speakers"]) if "speakers" in choice else None
            except (ValidationError, TypeError) as exc:
                raise ValueError(f"bad device choice: {exc}") from None
            if cam_cfg is not None and (cam_cfg.width, cam_cfg.height) != (
                    cur.camera.width, cur.camera.height):
                raise ValueError("the camera size is set in the config, not on the page")
            opened: list[Any] = []
            try:
                cam = mic = spk = None
                if cam_cfg is not None:
                    cam = await asyncio.to_thread(rig.open_camera, cam_cfg)
                    opened.append(cam)
                if mic_cfg is not None:
                    mic = await asyncio.to_thread(rig.open_microphone, mic_cfg)
                    opened.append(mic)
                if spk_cfg is not None:
                    spk = await asyncio.to_thread(rig.open_speakers, spk_cfg)
                    opened.append(spk)
            except DeviceError:
                for obj in opened:
                    obj.close()
                raise
            devices = cur.model_copy(update={
                k: v for k, v in (("camera", cam_cfg), ("microphone", mic_cfg),
                                  ("speakers", spk_cfg)) if v is not None})
            rig.use(devices, camera=cam, microphone=mic, speakers=spk)
            if cam is not None:
                self.last_camera_frame = None
            if mic_cfg is not None:
                old_proc, self.processor = self.processor, _processor_for(mic_cfg)
                if old_proc is not None:
                    old_proc.close()
            if mic_cfg is not None or spk is not None:
                # The (new) processor hears what the (new) speakers play.
                self._wire_speakers(rig.audio_sink)
            self._save(choice)
        return self.devices()

    def _save(self, choice: dict[str, Any]) -> None:
        path = _choice_file(self.classroom_id)
        saved: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(path.read_text(encoding="utf-8"))
        d = self.rig.classroom.devices
        for key in choice:
            saved[key] = getattr(d, key).model_dump(exclude_none=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(saved, ensure_ascii=False, indent=2), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            logger.warning("classroom %s: device choice not saved (%s): %s",
                           self.classroom_id, path, exc)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        rig = self.rig
        devices = rig.classroom.devices
        out: dict[str, Any] = {
            "mic_muted": self.mic_muted,
            "mic_level_dbov": round(self.mic_level_dbov, 1),
            "camera": {"kind": devices.camera.kind,
                       "connected": bool(getattr(rig.video_source, "connected", True))},
            "microphone": {"kind": devices.microphone.kind,
                           "live": bool(getattr(rig.audio_source, "live", True))},
            "processing": self.processor.stats() if self.processor is not None else None,
            "speakers": rig.audio_sink.stats() if isinstance(rig.audio_sink, SpeakerAudioSink)
            else {"kind": devices.speakers.kind},
        }
        return out

    def close(self) -> None:
        if self.processor is not None:
            self.processor.close()


def _size(cfg: VideoDeviceConfig) -> dict[str, Any]:
    return {"width": cfg.width, "height": cfg.height, "fps": cfg.fps}


def _processing(cfg: AudioDeviceConfig) -> dict[str, Any]:
    return {"aec": cfg.aec, "noise_suppression": cfg.noise_suppression, "agc": cfg.agc}
