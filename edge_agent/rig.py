"""The classroom PC's devices as one unit: camera, microphone, screen and speakers, and
the tracks that send the camera and the microphone in the current lesson.

The agent (:class:`edge_agent.agent.Agent`) owns the rig: it opens it at start, attaches
its sending tracks when it joins a lesson, detaches them when it leaves, and closes the
rig when it stops. The local page's device choice
(:class:`edge_agent.classroom_pc.ClassroomPC`) opens new devices through the rig and puts
them in place with :meth:`DeviceRig.use`, which re-points the live tracks: a lesson in
progress continues on the new device.
"""

from __future__ import annotations

import logging
from typing import Protocol

from syncclass.config import (
    AudioDeviceConfig,
    ClassroomConfig,
    DevicesConfig,
    SinkConfig,
    VideoDeviceConfig,
)

from .sinks import AudioSink, VideoSink, open_audio_sink, open_video_sink
from .sources import AudioSource, VideoSource, open_audio_source, open_video_source

__all__ = ["AudioFeed", "DeviceRig", "VideoFeed"]

logger = logging.getLogger(__name__)


class VideoFeed(Protocol):
    """A sending track that reads a video source (:class:`edge_agent.agent.EncodedVideoTrack`)."""

    source: VideoSource

    def stop(self) -> None:
        """End the track."""
        ...


class AudioFeed(Protocol):
    """A sending track that reads an audio source (:class:`edge_agent.agent.SourceAudioTrack`)."""

    source: AudioSource

    def stop(self) -> None:
        """End the track."""
        ...


class DeviceRig:
    """The devices of one classroom, opened from ``classroom.devices``; ``number`` is the
    classroom's number burned into a synthetic camera's timecode.

    A device missing at start raises :class:`~syncclass.errors.DeviceError` unless the
    config's ``fallback_to_synthetic`` is set.
    """

    def __init__(self, classroom: ClassroomConfig, number: int) -> None:
        self._classroom = classroom
        self.number = number
        devices = classroom.devices
        self._video_source: VideoSource = open_video_source(
            devices.camera, label=classroom.label, source=number,
            fallback_to_synthetic=devices.fallback_to_synthetic,
        )
        self._audio_source: AudioSource = open_audio_source(
            devices.microphone, tone_hz=devices.microphone.tone_hz or classroom.tone_hz,
            fallback_to_synthetic=devices.fallback_to_synthetic,
        )
        self._video_sink: VideoSink = open_video_sink(devices.screen, title=classroom.name)
        self._audio_sink: AudioSink = open_audio_sink(devices.speakers)
        self._video_feeds: list[VideoFeed] = []
        self._audio_feeds: list[AudioFeed] = []

    # -- what is in use --------------------------------------------------------------------
    @property
    def classroom(self) -> ClassroomConfig:
        """The classroom's config with the devices now in use (the page's choice included)."""
        return self._classroom

    @property
    def video_source(self) -> VideoSource:
        """The camera."""
        return self._video_source

    @property
    def audio_source(self) -> AudioSource:
        """The microphone."""
        return self._audio_source

    @property
    def video_sink(self) -> VideoSink:
        """The screen."""
        return self._video_sink

    @property
    def audio_sink(self) -> AudioSink:
        """The speakers."""
        return self._audio_sink

    # -- sending tracks --------------------------------------------------------------------
    def attach(self, video: VideoFeed, audio: AudioFeed) -> None:
        """Tracks that now send the camera and the microphone (a lesson was joined)."""
        self._video_feeds.append(video)
        self._audio_feeds.append(audio)

    def detach(self) -> list[VideoFeed | AudioFeed]:
        """Forget the sending tracks and return them (the caller stops them)."""
        feeds: list[VideoFeed | AudioFeed] = [*self._video_feeds, *self._audio_feeds]
        self._video_feeds, self._audio_feeds = [], []
        return feeds

    # -- switching devices -----------------------------------------------------------------
    def open_camera(self, cfg: VideoDeviceConfig) -> VideoSource:
        """Open the camera ``cfg`` (no synthetic fallback: a missing device raises);
        blocking, run it off the event loop."""
        return open_video_source(cfg, label=self._classroom.label, source=self.number,
                                 fallback_to_synthetic=False)

    def open_microphone(self, cfg: AudioDeviceConfig) -> AudioSource:
        """Open the microphone ``cfg`` (no synthetic fallback); blocking."""
        return open_audio_source(cfg, tone_hz=self._classroom.tone_hz,
                                 fallback_to_synthetic=False)

    def open_speakers(self, cfg: SinkConfig) -> AudioSink:
        """Open the speakers ``cfg``; blocking."""
        return open_audio_sink(cfg)

    def use(self, devices: DevicesConfig, *, camera: VideoSource | None = None,
            microphone: AudioSource | None = None, speakers: AudioSink | None = None) -> None:
        """Make ``devices`` the classroom's device config and put the given (opened)
        devices in place of the current ones: live tracks read the new source from their
        next frame, and the replaced devices are closed."""
        self._classroom = self._classroom.model_copy(update={"devices": devices})
        cid = self._classroom.id
        if camera is not None:
            old_cam, self._video_source = self._video_source, camera
            for video in self._video_feeds:
                video.source = camera
            old_cam.close()
            logger.info("classroom %s: camera switched", cid)
        if microphone is not None:
            old_mic, self._audio_source = self._audio_source, microphone
            for audio in self._audio_feeds:
                audio.source = microphone
            old_mic.close()
            logger.info("classroom %s: microphone switched", cid)
        if speakers is not None:
            old_sink, self._audio_sink = self._audio_sink, speakers
            old_sink.close()

    def close(self) -> None:
        """Close every device."""
        self._video_source.close()
        self._audio_source.close()
        self._video_sink.close()
        self._audio_sink.close()
