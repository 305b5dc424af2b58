"""What the agent does on the classroom PC itself: the microphone chain (echo
cancellation against the speakers, noise suppression, AGC, mute, level), the screen's
status strip, the camera preview for the local page, and the teacher's device choice
(kept across restarts).

:class:`ClassroomPC` is owned by :class:`edge_agent.agent.Agent`; its :meth:`run` task
runs as long as the agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import cv2
import numpy as np
from pydantic import ValidationError

from syncclass.audio import level_dbov
from syncclass.config import AudioDeviceConfig, ClassroomConfig, SinkConfig, VideoDeviceConfig
from syncclass.errors import DeviceError

from .audio_processing import AudioProcessor, AudioProcessorOptions
from .devices import (
    AudioSink,
    AudioSource,
    VideoSource,
    open_audio_sink,
    open_audio_source,
    open_video_source,
)
from .screen import ScreenStatus, ScreenVideoSink
from .speakers import SpeakerAudioSink

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["ClassroomPC", "apply_saved_devices", "state_dir"]

logger = logging.getLogger(__name__)

SCREEN_REFRESH_S = 0.5
"""How often the screen's status strip is redrawn when no video arrives, s."""
HAND_SHOWN_S = 30.0
"""How long the strip shows a raised hand, s."""
PREVIEW_MAX_AGE_S = 1.0
"""A camera frame older than this is not used as the preview; a fresh one is read, s."""


def state_dir() -> Path:
    """Where the agent keeps local state (the device choice): ``$SYNCCLASS_STATE_DIR``, else
    ``%LOCALAPPDATA%\\syncclass`` on Windows, else ``~/.local/state/syncclass``."""
    env = os.environ.get("SYNCCLASS_STATE_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "syncclass"
    return Path.home() / ".local" / "state" / "syncclass"


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


class ClassroomPC:
    """The local side of one agent: mic chain, screen strip, preview, device choice."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.mic_muted = False
        self.mic_level_dbov = -127.0
        """Level of the last microphone frame sent (after processing), dBov."""
        self.last_camera_frame: av.VideoFrame | None = None
        self.last_camera_mono = 0.0
        self.processor = _processor_for(agent.classroom.devices.microphone)
        self._wire_speakers(agent.audio_sink)
        if isinstance(agent.video_sink, ScreenVideoSink):
            agent.video_sink.status = self.screen_status
        self._switch_lock = asyncio.Lock()
        self._hands_seen = agent.hands_raised
        self._hand_mono: float | None = None

    def _wire_speakers(self, sink: AudioSink) -> None:
        if self.processor is not None and isinstance(sink, SpeakerAudioSink):
            sink.add_played_listener(self.processor.feed_reference)
        elif self.processor is not None and self.processor.options.aec:
            logger.warning("classroom %s: echo cancellation has no reference: the speakers "
                           "are not a sound device", self.agent.classroom.id)

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
            logger.info("classroom %s: microphone %s", self.agent.classroom.id,
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
            frame = await asyncio.wait_for(self.agent.video_source.read(), 5.0)
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
        a = self.agent
        lesson = ""
        if a.lesson is not None and a.lesson.state == "live":
            lesson = f"上课中 live · {a.lesson.subject}"
        latency = None
        rx = a.reception
        if rx is not None:
            values = [float(np.median(s.samples_ms)) for s in rx.latency.values() if s.samples_ms]
            latency = max(values) if values else None
        return ScreenStatus(connected=a.state == "connected", lesson=lesson, latency_ms=latency,
                            hand_raised=self._hand_up(), mic_level_dbov=self.mic_level_dbov,
                            mic_muted=self.mic_muted)

    def _hand_up(self) -> bool:
        """This classroom raised its hand in the last ``HAND_SHOWN_S`` seconds of a live
        lesson. (The mixer does not tell the main classroom's agent about hands yet.)"""
        a = self.agent
        if a.hands_raised != self._hands_seen:
            self._hands_seen = a.hands_raised
            self._hand_mono = time.monotonic()
        live = a.lesson is not None and a.lesson.state == "live"
        return live and self._hand_mono is not None and (
            time.monotonic() - self._hand_mono < HAND_SHOWN_S)

    async def run(self) -> None:
        """Keep the screen's strip current while no video arrives; until cancelled."""
        sink = self.agent.video_sink
        if not isinstance(sink, ScreenVideoSink):
            return
        while True:
            await asyncio.sleep(SCREEN_REFRESH_S)
            rx = self.agent.reception
            recent = rx is not None and rx.last_frame_mono is not None and (
                time.monotonic() - rx.last_frame_mono < SCREEN_REFRESH_S)
            if not recent:
                sink.refresh(idle=not self.agent.in_lesson)
            if sink.quit_requested:
                logger.info("classroom %s: screen closed; the agent keeps running",
                            self.agent.classroom.id)
                sink.quit_requested = False

    # -- device choice ---------------------------------------------------------------------
    def devices(self) -> dict[str, Any]:
        d = self.agent.classroom.devices
        return {"camera": d.camera.model_dump(), "microphone": d.microphone.model_dump(),
                "speakers": d.speakers.model_dump(), "saved_in": str(
                    _choice_file(self.agent.classroom.id))}

    async def choose(self, choice: dict[str, Any]) -> dict[str, Any]:
        """Switch to the devices in ``choice`` (``camera`` / ``microphone`` / ``speakers``:
        partial device configs) now, and keep the choice for the next start.

        Everything is opened before anything is replaced: a device that fails to open
        raises :class:`DeviceError` (``ValueError`` for a bad choice) and changes nothing.
        """
        unknown = set(choice) - {"camera", "microphone", "speakers"}
        if unknown or not choice:
            raise ValueError(f"choose camera, microphone and/or speakers (got {sorted(choice)})")
        a = self.agent
        cur = a.classroom.devices
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
                    cam = await asyncio.to_thread(
                        open_video_source, cam_cfg, label=a.classroom.label, source=a.number,
                        fallback_to_synthetic=False)
                    opened.append(cam)
                if mic_cfg is not None:
                    mic = await asyncio.to_thread(open_audio_source, mic_cfg,
                                                  tone_hz=a.classroom.tone_hz,
                                                  fallback_to_synthetic=False)
                    opened.append(mic)
                if spk_cfg is not None:
                    spk = await asyncio.to_thread(open_audio_sink, spk_cfg)
                    opened.append(spk)
            except DeviceError:
                for obj in opened:
                    obj.close()
                raise
            devices = cur.model_copy(update={
                k: v for k, v in (("camera", cam_cfg), ("microphone", mic_cfg),
                                  ("speakers", spk_cfg)) if v is not None})
            a.classroom = a.classroom.model_copy(update={"devices": devices})
            if cam is not None:
                self._swap_camera(cam)
            if mic is not None:
                self._swap_mic(mic, mic_cfg)
            if spk is not None:
                old_sink, a.audio_sink = a.audio_sink, spk
                self._wire_speakers(spk)
                old_sink.close()
            self._save(choice)
        return self.devices()

    def _swap_camera(self, cam: VideoSource) -> None:
        a = self.agent
        old, a.video_source = a.video_source, cam
        for track in a._tracks:
            if getattr(track, "kind", None) == "video" and hasattr(track, "source"):
                track.source = cam
        self.last_camera_frame = None
        old.close()
        logger.info("classroom %s: camera switched", a.classroom.id)

    def _swap_mic(self, mic: AudioSource, cfg: AudioDeviceConfig | None) -> None:
        a = self.agent
        old, a.audio_source = a.audio_source, mic
        for track in a._tracks:
            if getattr(track, "kind", None) == "audio" and hasattr(track, "source"):
                track.source = mic
        if cfg is not None:
            old_proc, self.processor = self.processor, _processor_for(cfg)
            self._wire_speakers(a.audio_sink)
            if old_proc is not None:
                old_proc.close()
        old.close()
        logger.info("classroom %s: microphone switched", a.classroom.id)

    def _save(self, choice: dict[str, Any]) -> None:
        path = _choice_file(self.agent.classroom.id)
        saved: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(path.read_text(encoding="utf-8"))
        d = self.agent.classroom.devices
        for key in choice:
            saved[key] = getattr(d, key).model_dump(exclude_none=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(saved, ensure_ascii=False, indent=2), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            logger.warning("classroom %s: device choice not saved (%s): %s",
                           self.agent.classroom.id, path, exc)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        a = self.agent
        cam = a.video_source
        out: dict[str, Any] = {
            "mic_muted": self.mic_muted,
            "mic_level_dbov": round(self.mic_level_dbov, 1),
            "camera": {"kind": a.classroom.devices.camera.kind,
                       "connected": bool(getattr(cam, "connected", True))},
            "microphone": {"kind": a.classroom.devices.microphone.kind,
                           "live": bool(getattr(a.audio_source, "live", True))},
            "processing": self.processor.stats() if self.processor is not None else None,
            "speakers": a.audio_sink.stats() if isinstance(a.audio_sink, SpeakerAudioSink)
            else {"kind": a.classroom.devices.speakers.kind},
        }
        return out

    def close(self) -> None:
        if self.processor is not None:
            self.processor.close()


def _size(cfg: VideoDeviceConfig) -> dict[str, Any]:
    return {"width": cfg.width, "height": cfg.height, "fps": cfg.fps}


def _processing(cfg: AudioDeviceConfig) -> dict[str, Any]:
    return {"aec": cfg.aec, "noise_suppression": cfg.noise_suppression, "agc": cfg.agc}
