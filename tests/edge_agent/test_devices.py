"""Classroom sources and sinks: synthetic media, files, camera/microphone errors, sinks."""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import subprocess
import sys
import threading
import time
import wave
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.pacing import (
    AUDIO_FRAME_SAMPLES,
    AUDIO_TIME_BASE,
    SAMPLE_RATE,
    VIDEO_TIME_BASE,
    luma_of,
)
from edge_agent.sinks import (
    FileVideoSink,
    NullAudioSink,
    NullVideoSink,
    WavAudioSink,
    WindowVideoSink,
    open_audio_sink,
    open_video_sink,
)
from edge_agent.sources import (
    AudioSource,
    CameraVideoSource,
    FileAudioSource,
    FileVideoSource,
    MicrophoneAudioSource,
    SyntheticAudioSource,
    SyntheticVideoSource,
    VideoSource,
    is_flash_instant,
    open_audio_source,
    open_video_source,
)
from syncclass.config import AudioDeviceConfig, SinkConfig, VideoDeviceConfig
from syncclass.errors import DeviceError
from syncclass.fonts import render_text
from syncclass.timecode import Timecode, paint_timecode, read_timecode, timecode_band_height


def peak_hz(samples: npt.NDArray[Any]) -> float:
    """Frequency of the strongest FFT bin, Hz."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


def is_flash(frame: av.VideoFrame) -> bool:
    y = luma_of(frame)
    return bool(y[timecode_band_height(frame.height) :].min() >= 230)


@pytest.fixture
def media_file(tmp_path: Path) -> Path:
    """A 1 s file: 320x240 video at 10 fps whose timecode ``source`` is the frame index,
    and a 440 Hz stereo AAC tone at 44.1 kHz."""
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=44100, layout="stereo")
        for i in range(10):
            y = np.full((360, 320), 128, np.uint8)
            y[:240] = 90
            paint_timecode(y[:240], Timecode(capture_ms=1000 + i * 100, source=i))
            frame = av.VideoFrame.from_ndarray(y, format="yuv420p")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        n = np.arange(44100)
        tone = (0.3 * np.sin(2 * np.pi * 440 * n / 44100)).astype(np.float32)
        for start in range(0, 44100, 1024):
            chunk = tone[start : start + 1024]
            chunk_frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp")
            chunk_frame.sample_rate, chunk_frame.pts = 44100, start
            container.mux(audio.encode(chunk_frame))
        container.mux(audio.encode(None))
    return path


# -- synthetic video ------------------------------------------------------------------------


async def test_synthetic_video_timecodes_and_pacing() -> None:
    src = SyntheticVideoSource(1280, 720, 30.0, label="Room A", source=5, sync_period_s=None)
    assert isinstance(src, VideoSource)
    t0 = time.monotonic()
    frames = [await src.read() for _ in range(10)]
    elapsed = time.monotonic() - t0
    assert 0.25 < elapsed < 3.0  # 9 frame intervals of 33 ms: paced, never faster
    codes = [read_timecode(luma_of(f)) for f in frames]
    assert all(tc is not None and tc.source == 5 for tc in codes)
    capture = [tc.capture_ms for tc in codes if tc is not None]
    assert capture == sorted(capture) and capture[-1] - capture[0] >= 200
    assert codes[-1] is not None and codes[-1].capture_ms == src.last_capture_ms
    assert abs(capture[-1] - time.time() * 1000) < 500
    pts = [f.pts or 0 for f in frames]
    assert pts == sorted(set(pts))
    assert abs((pts[-1] - pts[0]) / 90000 - 0.3) < 0.1
    assert all(f.time_base == VIDEO_TIME_BASE and f.format.name == "yuv420p" for f in frames)
    assert (frames[0].width, frames[0].height) == (1280, 720)


def test_synthetic_video_draws_a_chinese_label() -> None:
    """A classroom label in Chinese shows in the synthetic camera's picture in the CJK
    font (OpenCV's Hershey font drew each of its characters as '?')."""
    band = timecode_band_height(720)

    def label_area(label: str) -> npt.NDArray[np.uint8]:
        src = SyntheticVideoSource(1280, 720, 15.0, label=label, source=1, sync_period_s=None)
        y = luma_of(src.produce(1000.0))
        return y[band + 4 : band + 4 + 60, 4 : 4 + 400].copy()

    chinese, marks = label_area("三(1)班"), label_area("?(1)?")
    ink = render_text("三", 32)  # the label's first glyph at 720p's size (32 px)
    assert not np.array_equal(chinese, marks)
    # The first glyph's strokes: its ink's rows and columns match the picture's bright
    # pixels inside the label's box (pad 5 px, text 16..235).
    th, tw = ink.shape
    glyph = chinese[5 : 5 + th, 5 : 5 + tw].astype(np.int32)
    expected = 16 + ink.astype(np.int32) * (235 - 16) // 255
    assert np.abs(glyph - expected).max() <= 2
    assert int(np.count_nonzero(ink > 128)) > 50  # the glyph has strokes, not a blank


async def test_synthetic_video_late_reader_gets_one_catch_up_frame() -> None:
    src = SyntheticVideoSource(320, 180, 20.0, label="late", source=1, sync_period_s=None)
    await src.read()
    await asyncio.sleep(0.2)  # four frames late
    t0 = time.monotonic()
    await src.read()  # late: at once
    for _ in range(3):  # then on the next slots, not a burst of the four missed frames
        await src.read()
    assert time.monotonic() - t0 > 0.095


async def test_synthetic_video_frames_on_epoch_aligned_slots() -> None:
    src = SyntheticVideoSource(320, 180, 20.0, label="slots", source=1, sync_period_s=None)
    for _ in range(5):
        frame = await src.read()
        tc = read_timecode(luma_of(frame))
        assert tc is not None
        assert tc.capture_ms % 50 < 25  # produced just after a j / fps instant


def test_flash_frames_are_epoch_aligned_deterministic() -> None:
    src = SyntheticVideoSource(320, 180, 10.0, label="flash", source=2, sync_period_s=5.0)
    assert is_flash(src.produce(1_700_000_000.0))  # k * 5 s exactly
    assert is_flash(src.produce(1_700_000_000.1))  # the flash lasts FLASH_S (0.2 s)
    assert not is_flash(src.produce(1_700_000_000.2))  # window is [kP, kP + 0.2 s)
    assert not is_flash(src.produce(1_700_000_004.99))
    assert is_flash(src.produce(1_700_000_005.02))
    assert src.flashes == 2  # sync marks, not frames
    assert is_flash_instant(10.0, 5.0, 10.0) == 2
    assert is_flash_instant(10.15, 5.0, 10.0) == 2
    assert is_flash_instant(10.25, 5.0, 10.0) is None
    # The flash keeps the timecode readable.
    frame = src.produce(1_700_000_010.0)
    assert read_timecode(luma_of(frame)) == Timecode(capture_ms=1_700_000_010_000, source=2)


async def test_flash_frames_appear_at_epoch_aligned_instants() -> None:
    period = 0.5
    src = SyntheticVideoSource(320, 180, 20.0, label="sync", source=3, sync_period_s=period)
    flashes: list[int] = []
    others: list[int] = []
    for _ in range(24):  # 1.2 s
        frame = await src.read()
        tc = read_timecode(luma_of(frame))
        assert tc is not None
        (flashes if is_flash(frame) else others).append(tc.capture_ms)
    period_ms = round(period * 1000)
    marks = {ms // period_ms for ms in flashes}
    assert len(marks) >= 2  # frames sit on epoch-aligned slots: no mark is missed
    for ms in flashes:
        assert ms % period_ms < 200  # within [kP, kP + FLASH_S)
    first = min(flashes + others)
    for mark in marks:  # each mark seen from its start begins exactly on its instant
        start = min(ms for ms in flashes if ms // period_ms == mark)
        if start != first:
            assert start % period_ms < 5, start
    assert all(ms % period_ms >= 200 for ms in others)


# -- synthetic audio ------------------------------------------------------------------------


async def test_synthetic_audio_tone_pacing_and_format() -> None:
    src = SyntheticAudioSource(440.0, sync_period_s=None)
    assert isinstance(src, AudioSource)
    t0 = time.monotonic()
    frames = [await src.read() for _ in range(11)]
    assert 0.18 < time.monotonic() - t0 < 3.0  # 10 intervals of 20 ms: paced, never faster
    first = frames[0]
    assert (first.samples, first.sample_rate, first.format.name, first.layout.name) == (
        AUDIO_FRAME_SAMPLES,
        SAMPLE_RATE,
        "s16",
        "mono",
    )
    assert first.time_base == AUDIO_TIME_BASE
    assert [f.pts for f in frames] == [i * AUDIO_FRAME_SAMPLES for i in range(11)]
    signal = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert abs(peak_hz(signal) - 440) < 5
    # Continuous phase: no jump at frame boundaries (max step of a 440 Hz sine at 0.3 FS).
    step = 0.3 * 32767 * 2 * math.pi * 440 / SAMPLE_RATE
    assert np.abs(np.diff(signal.astype(np.int32))).max() <= step + 2
    assert abs(int(signal.max()) - round(0.3 * 32767)) < 50


def beep_onset(signal: npt.NDArray[Any], guess: int, beep_hz: float, amplitude: float) -> int:
    """The sample where a ``beep_hz`` sine starting at phase 0 fits ``signal`` best."""
    best, best_err = guess, math.inf
    n = np.arange(480)
    for onset in range(guess - 48, guess + 49):
        model = amplitude * 32767 * np.sin(2 * np.pi * beep_hz * n / SAMPLE_RATE)
        err = float(np.abs(signal[onset : onset + 480] - model).mean())
        if err < best_err:
            best, best_err = onset, err
    return best


async def test_synthetic_audio_beep_at_aligned_instant() -> None:
    period = 0.25
    src = SyntheticAudioSource(440.0, sync_period_s=period, beep_hz=3000.0, beep_ms=100)
    frames = [await src.read() for _ in range(20)]  # 0.4 s: at least one mark
    start = src.start_epoch
    assert start is not None
    signal = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)
    mark = math.ceil(start / period) * period  # the first epoch-aligned mark after start
    expected = (mark - start) * SAMPLE_RATE  # its fractional sample index
    if expected < 50:  # too close to the start to see the tone before it: take the next
        expected += period * SAMPLE_RATE
    guess = round(expected)
    onset = beep_onset(signal, guess, 3000.0, 0.3)
    assert abs(onset - expected) <= 1  # sample-accurate vs wall clock
    assert abs(peak_hz(signal[onset : onset + 4800]) - 3000) < 15
    before = signal[max(0, onset - 4800) : onset]
    assert np.abs(before).max() > 0
    assert abs(peak_hz(before) - 440) < 60 if before.size >= 960 else True
    assert abs(peak_hz(signal[onset + 4800 : onset + 7200]) - 440) < 30  # tone resumes


# -- file sources ---------------------------------------------------------------------------


async def test_file_sources_loop(media_file: Path) -> None:
    video = FileVideoSource(str(media_file), 640, 360, 20.0)
    audio = FileAudioSource(str(media_file))

    async def read_video() -> list[av.VideoFrame]:
        return [await video.read() for _ in range(26)]  # 1.3 s

    async def read_audio() -> list[av.AudioFrame]:
        return [await audio.read() for _ in range(65)]  # 1.3 s

    try:
        frames, chunks = await asyncio.gather(read_video(), read_audio())
    finally:
        video.close()
        audio.close()
    assert (frames[0].width, frames[0].height, frames[0].format.name) == (640, 360, "yuv420p")
    indexes = []
    for f in frames:
        tc = read_timecode(luma_of(f))
        assert tc is not None
        indexes.append(tc.source)
    # 10 fps file at 20 fps output: each file frame twice, then the file starts over.
    assert indexes[:20] == [i // 2 for i in range(20)]
    assert indexes[20:22] == [0, 0]
    assert video.loops >= 1
    assert audio.loops >= 1
    assert all(c.samples == AUDIO_FRAME_SAMPLES and c.layout.name == "mono" for c in chunks)
    signal = np.concatenate([c.to_ndarray().reshape(-1) for c in chunks])
    assert abs(peak_hz(signal[4800:48000]) - 440) < 5
    assert [c.pts for c in chunks[:3]] == [0, 960, 1920]


def test_file_sources_missing_or_bad(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(DeviceError, match=r"nope\.mp4.*no such file"):
        FileVideoSource(str(missing), 320, 180, 15.0)
    with pytest.raises(DeviceError, match=r"nope\.mp4"):
        FileAudioSource(str(missing))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a media file" * 100)
    with pytest.raises(DeviceError, match=r"garbage\.mp4.*cannot open"):
        FileVideoSource(str(garbage), 320, 180, 15.0)


# -- camera and microphone ------------------------------------------------------------------


def test_camera_missing_raises() -> None:
    with pytest.raises(DeviceError, match="camera 57"):
        CameraVideoSource(57, None, 640, 360, 15.0)
    with pytest.raises(DeviceError, match="/dev/video_syncclass_none"):
        CameraVideoSource(None, "/dev/video_syncclass_none", 640, 360, 15.0)


async def test_camera_reads_frames_on_its_thread(media_file: Path) -> None:
    # OpenCV opens a video file like a camera; the source plays it at fps and loops.
    cam = CameraVideoSource(None, str(media_file), 320, 180, 20.0)
    try:
        frames = [await cam.read() for _ in range(6)]
    finally:
        cam.close()
    assert not cam._thread.is_alive()
    assert all((f.width, f.height, f.format.name) == (320, 180, "yuv420p") for f in frames)
    assert cam.frames_captured >= 2
    assert read_timecode(luma_of(frames[-1])) is not None


def test_microphone_missing_raises() -> None:
    # Without PortAudio, or without such a device, the error names the problem.
    with pytest.raises(DeviceError, match="microphone"):
        MicrophoneAudioSource("syncclass-no-such-microphone")


class FakeInputStream:
    """Stands in for ``sounddevice.InputStream``: start() delivers 15 blocks from a thread."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.stopped = False

    def start(self) -> None:
        def deliver() -> None:
            for i in range(15):
                block = np.full((960, 1), i, dtype=np.int16)
                self.kwargs["callback"](block, 960, None, None)

        thread = threading.Thread(target=deliver)
        thread.start()
        thread.join()

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        pass


@pytest.fixture
def fake_sounddevice(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    devices = [
        {"name": "HDMI Output", "max_input_channels": 0},
        {"name": "USB Classroom Mic", "max_input_channels": 1},
        {"name": "Built-in Mic", "max_input_channels": 2},
    ]
    fake = SimpleNamespace(
        query_devices=lambda: devices,
        default=SimpleNamespace(device=(2, 0)),
        InputStream=FakeInputStream,
    )
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    return fake


async def test_microphone_lookup_and_drop_oldest(
    fake_sounddevice: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    assert MicrophoneAudioSource(None).device_name == "Built-in Mic"
    with pytest.raises(DeviceError, match=r"\[1\] 'USB Classroom Mic', \[2\] 'Built-in Mic'"):
        MicrophoneAudioSource("Speaker")
    with pytest.raises(DeviceError, match="ambiguous"):
        MicrophoneAudioSource("mic")
    mic = MicrophoneAudioSource("usb")
    assert mic.device_index == 1
    assert mic._stream.kwargs["blocksize"] == AUDIO_FRAME_SAMPLES
    with caplog.at_level(logging.WARNING, logger="edge_agent.sources"):
        frames = [await mic.read() for _ in range(10)]
    # 15 blocks into a 10-block queue before the reader ran: the 5 oldest were dropped.
    assert mic.dropped_blocks == 5 and "dropped" in caplog.text
    assert [int(f.to_ndarray()[0, 0]) for f in frames] == list(range(5, 15))
    assert [f.pts for f in frames] == [i * 960 for i in range(5, 15)]
    mic.close()
    assert mic._stream.stopped


def test_fallback_to_synthetic(caplog: pytest.LogCaptureFixture) -> None:
    camera = VideoDeviceConfig(
        kind="camera", path="/dev/video_syncclass_none", width=320, height=180
    )
    with pytest.raises(DeviceError):
        open_video_source(camera, label="x", source=1, fallback_to_synthetic=False)
    with caplog.at_level(logging.WARNING, logger="edge_agent.sources"):
        src = open_video_source(camera, label="x", source=1, fallback_to_synthetic=True)
    assert isinstance(src, SyntheticVideoSource) and (src.width, src.height) == (320, 180)
    assert "synthetic" in caplog.text
    mic = AudioDeviceConfig(kind="microphone", name="syncclass-no-such-microphone")
    with pytest.raises(DeviceError):
        open_audio_source(mic, tone_hz=550.0, fallback_to_synthetic=False)
    audio = open_audio_source(mic, tone_hz=550.0, fallback_to_synthetic=True)
    assert isinstance(audio, SyntheticAudioSource) and audio.freq_hz == 550.0
    missing = AudioDeviceConfig(kind="file", path="/nonexistent/a.wav", tone_hz=660.0)
    audio = open_audio_source(missing, tone_hz=550.0, fallback_to_synthetic=True)
    assert isinstance(audio, SyntheticAudioSource) and audio.freq_hz == 660.0
    assert isinstance(
        open_video_source(VideoDeviceConfig(), label="x", source=1, fallback_to_synthetic=False),
        SyntheticVideoSource,
    )


# -- sinks ----------------------------------------------------------------------------------


def test_file_video_sink_writes_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "view.mp4"
    sink = open_video_sink(SinkConfig(kind="file", path=str(path)), title="t", fps=15.0)
    assert isinstance(sink, FileVideoSink)
    big = SyntheticVideoSource(640, 360, 15.0, label="big", source=4, sync_period_s=None)
    small = SyntheticVideoSource(320, 180, 15.0, label="small", source=4, sync_period_s=None)
    base = 1_700_000_000.0
    for i in range(20):
        src = small if i % 5 == 4 else big  # every 5th frame has another size
        frame = src.produce(base + i / 15)
        frame.pts, frame.time_base = i * 6000, VIDEO_TIME_BASE
        sink.write(frame)
    sink.close()
    sink.close()  # idempotent
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
    assert len(decoded) == 20
    assert all((f.width, f.height) == (640, 360) for f in decoded)
    codes = [read_timecode(luma_of(f)) for f in decoded]
    assert [tc.capture_ms if tc else None for tc in codes] == [
        int((base + i / 15) * 1000) for i in range(20)
    ]
    times = [f.time for f in decoded]
    assert times[0] is not None and times[-1] is not None
    assert abs((times[-1] - times[0]) - 19 / 15) < 0.01
    if shutil.which("ffprobe"):
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stderr == ""
        assert "codec_name=h264" in probe.stdout


def test_file_video_sink_without_frames_writes_nothing(tmp_path: Path) -> None:
    sink = FileVideoSink(str(tmp_path / "none.mkv"), 15.0)
    sink.close()
    assert not (tmp_path / "none.mkv").exists()


def test_null_sinks_count() -> None:
    video = open_video_sink(SinkConfig(), title="t")
    audio = open_audio_sink(SinkConfig())
    assert isinstance(video, NullVideoSink) and isinstance(audio, NullAudioSink)
    video.write(av.VideoFrame(320, 180, "yuv420p"))
    audio.write(SyntheticAudioSource(440.0).frame_at(0))
    assert video.frames == 1 and audio.frames == 1 and audio.samples == 960


def test_wav_sink_has_tone_and_downmixes(tmp_path: Path) -> None:
    path = tmp_path / "speakers.wav"
    sink = open_audio_sink(SinkConfig(kind="file", path=str(path)))
    assert isinstance(sink, WavAudioSink)
    tone = SyntheticAudioSource(660.0, sync_period_s=None)
    for i in range(25):  # 0.5 s mono s16
        sink.write(tone.frame_at(i * 960))
    n = np.arange(24000)
    stereo = np.stack([np.sin(2 * np.pi * 880 * n / 48000)] * 2).astype(np.float32) * 0.3
    for start in range(0, 24000, 1024):  # 0.5 s stereo float planar
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(stereo[:, start : start + 1024]), format="fltp", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
        sink.write(frame)
    sink.close()
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 48000)
        data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert abs(data.size - 48000) <= 64
    assert abs(peak_hz(data[:24000]) - 660) < 5
    assert abs(peak_hz(data[24000 + 2400 : 48000 - 64]) - 880) < 5
    assert abs(int(np.abs(data[26000:40000]).max()) - round(0.3 * 32767)) < 400


def test_window_sink_with_dummy_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    sink = open_video_sink(SinkConfig(kind="window"), title="Room B")
    assert isinstance(sink, WindowVideoSink)
    src = SyntheticVideoSource(320, 180, 15.0, label="win", source=1)
    for i in range(3):
        sink.write(src.produce(time.time() + i))
    sink.write(av.VideoFrame(640, 360, "yuv420p"))  # another size: scaled to fit
    assert sink.frames == 4 and not sink.quit_requested
    sink.close()
    sink.close()


def test_window_sink_without_display_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "syncclass_no_such_driver")
    monkeypatch.setenv("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    with pytest.raises(DeviceError, match="no display"):
        WindowVideoSink(fullscreen=True, title="Room C")
