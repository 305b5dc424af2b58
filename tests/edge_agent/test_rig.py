"""The device rig the agent owns (edge_agent.rig): switching a device re-points the tracks
that send it and closes the old one; the classroom PC asks the rig, never edits the agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.classroom_pc import ClassroomPC, LessonView
from edge_agent.rig import DeviceRig
from edge_agent.sources import AudioSource, SyntheticAudioSource, VideoSource
from syncclass.config import ClassroomConfig, default_config_path, load_config


class Feed:
    """Stands in for a sending track: holds the source it reads."""

    def __init__(self, source: VideoSource | AudioSource) -> None:
        self.source = source
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class Closing(SyntheticAudioSource):
    closed = 0

    def close(self) -> None:
        self.closed += 1


def _classroom() -> ClassroomConfig:
    return load_config(default_config_path()).classrooms[1]


def _view() -> LessonView:
    return LessonView(connected=True, lesson_live=False, subject="", latency_ms=None,
                      hands_raised=0, in_lesson=False, last_frame_mono=None)


def test_use_repoints_attached_tracks_and_closes_the_old_device() -> None:
    room = _classroom()
    rig = DeviceRig(room, 2)
    try:
        old_mic = Closing(300.0)
        rig.use(room.devices, microphone=old_mic)
        video, audio = Feed(rig.video_source), Feed(rig.audio_source)
        rig.attach(video, audio)  # type: ignore[arg-type]
        new_mic = SyntheticAudioSource(700.0)
        devices = room.devices.model_copy(update={
            "microphone": room.devices.microphone.model_copy(update={"tone_hz": 700.0})})
        rig.use(devices, microphone=new_mic)
        assert audio.source is new_mic and rig.audio_source is new_mic
        assert video.source is rig.video_source
        assert old_mic.closed == 1
        assert rig.classroom.devices.microphone.tone_hz == 700.0
        assert rig.classroom.id == room.id
        assert rig.detach() == [video, audio]
        rig.use(room.devices, microphone=Closing(400.0))
        assert audio.source is new_mic  # detached tracks are no longer re-pointed
    finally:
        rig.close()


async def test_classroom_pc_choice_goes_through_the_rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCCLASS_STATE_DIR", str(tmp_path))
    rig = DeviceRig(_classroom(), 2)
    local = ClassroomPC(rig, _view)
    try:
        audio = Feed(rig.audio_source)
        rig.attach(Feed(rig.video_source), audio)  # type: ignore[arg-type]
        out = await local.choose({"microphone": {"kind": "synthetic", "tone_hz": 880.0}})
        assert out["microphone"]["tone_hz"] == 880.0
        assert isinstance(audio.source, SyntheticAudioSource)
        assert audio.source.freq_hz == 880.0 and audio.source is rig.audio_source
        assert (tmp_path / f"devices-{rig.classroom.id}.json").is_file()
    finally:
        local.close()
        rig.close()
