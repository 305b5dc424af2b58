"""Device listing (``syncclass agent devices``), choosing devices by name or index, and
what happens when a device disappears while the agent runs (placeholder / silence and
retry, never a crash)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_agent import device_list
from edge_agent.device_list import find_audio_device, list_cameras
from edge_agent.devices import CameraVideoSource, MicrophoneAudioSource, luma_of
from syncclass.errors import DeviceError
from tests.jack_support import jack_server

ROOT = Path(__file__).resolve().parents[2]


def test_cli_lists_audio_devices_of_a_jack_server() -> None:
    with jack_server() as name:
        env = {**os.environ, "JACK_DEFAULT_SERVER": name}
        js = subprocess.run([sys.executable, "-m", "syncclass", "agent", "devices", "--json"],
                            capture_output=True, text=True, env=env, timeout=60, check=True)
        text = subprocess.run([sys.executable, "-m", "syncclass", "agent", "devices"],
                              capture_output=True, text=True, env=env, timeout=60, check=True)
    found = json.loads(js.stdout)
    jack = [d for d in found["audio"] if d["host_api"] == "JACK Audio Connection Kit"]
    assert jack and jack[0]["name"] == "system", found
    assert jack[0]["inputs"] == 2 and jack[0]["outputs"] == 2
    assert "麦克风 Microphones:" in text.stdout and "扬声器 Speakers:" in text.stdout
    assert "system  (JACK Audio Connection Kit, in 2 / out 2, 48000 Hz)" in text.stdout


def test_agent_without_classroom_is_a_clear_error() -> None:
    r = subprocess.run([sys.executable, "-m", "syncclass", "agent"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--classroom is required" in r.stderr


def test_v4l2_cameras_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for node, name, index in [("video0", "HD Pro Webcam C920", "0"),
                              ("video1", "HD Pro Webcam C920", "1"),  # metadata node
                              ("video2", "USB Document Camera", "0")]:
        (tmp_path / node).mkdir()
        (tmp_path / node / "name").write_text(name + "\n")
        (tmp_path / node / "index").write_text(index + "\n")
    monkeypatch.setattr(device_list, "V4L2_SYSFS", tmp_path)
    if not sys.platform.startswith("linux"):
        pytest.fail("this test describes Linux's V4L2 listing")
    cams = list_cameras()
    assert [(c.index, c.name, c.path) for c in cams] == [
        (0, "HD Pro Webcam C920", "/dev/video0"), (2, "USB Document Camera", "/dev/video2")]


FAKE_DEVICES = [
    {"name": "HDMI Output", "max_input_channels": 0, "max_output_channels": 2},
    {"name": "USB Classroom Mic", "max_input_channels": 1, "max_output_channels": 0},
    {"name": "Built-in Audio", "max_input_channels": 2, "max_output_channels": 2},
]


def fake_sd(default: tuple[int, int] = (2, 2)) -> SimpleNamespace:
    return SimpleNamespace(query_devices=lambda: FAKE_DEVICES,
                           default=SimpleNamespace(device=default))


def test_find_audio_device_by_index_name_and_default() -> None:
    sd = fake_sd()
    assert find_audio_device(sd, None, None, "input") == (2, "Built-in Audio")
    assert find_audio_device(sd, None, None, "output") == (2, "Built-in Audio")
    assert find_audio_device(sd, "usb", None, "input") == (1, "USB Classroom Mic")
    assert find_audio_device(sd, "hdmi", None, "output") == (0, "HDMI Output")
    assert find_audio_device(sd, "ignored", 1, "input") == (1, "USB Classroom Mic")
    with pytest.raises(DeviceError, match=r"speakers index 1: no such output device"):
        find_audio_device(sd, None, 1, "output")  # a mic-only device
    with pytest.raises(DeviceError, match=r"microphone 'hdmi': not found; available"):
        find_audio_device(sd, "hdmi", None, "input")
    with pytest.raises(DeviceError, match="ambiguous"):
        find_audio_device(fake_sd(), "u", None, "output")


# -- a camera unplugged while running -------------------------------------------------------


class FlakyCapture:
    """Stands in for ``cv2.VideoCapture``: delivers frames while ``plugged`` is set."""

    plugged = threading.Event()
    opens = 0

    def __init__(self, *args: Any) -> None:
        self._open = FlakyCapture.plugged.is_set()
        if self._open:
            FlakyCapture.opens += 1

    def isOpened(self) -> bool:
        return self._open

    def set(self, *args: Any) -> bool:
        return True

    def read(self) -> tuple[bool, Any]:
        if not (self._open and FlakyCapture.plugged.is_set()):
            return False, None
        threading.Event().wait(0.01)
        return True, np.full((180, 320, 3), 200, np.uint8)

    def release(self) -> None:
        self._open = False


async def test_unplugged_camera_shows_placeholder_and_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edge_agent import devices

    monkeypatch.setattr(devices.cv2, "VideoCapture", FlakyCapture)
    monkeypatch.setattr(devices, "_CAMERA_MAX_FAILURES", 5)
    FlakyCapture.plugged.set()
    cam = CameraVideoSource(None, "rtsp://teacher:secret@10.0.0.9/stream1", 320, 180, 20.0,
                            retry_s=0.2)
    try:
        assert "secret" not in cam.device  # no password in logs
        frame = await cam.read()
        assert cam.connected and abs(int(luma_of(frame).mean()) - 200) < 30
        FlakyCapture.plugged.clear()  # unplugged
        for _ in range(100):
            frame = await cam.read()
            if not cam.connected:
                break
        assert not cam.connected
        frame = await cam.read()
        y = luma_of(frame)
        assert (frame.width, frame.height) == (320, 180)
        assert np.median(y) == 48 and y.max() > 200  # dark placeholder with white text
        assert cam.placeholder_frames >= 1
        FlakyCapture.plugged.set()  # plugged back in
        for _ in range(100):
            frame = await cam.read()
            if cam.connected:
                break
        frame = await cam.read()
        assert cam.connected and cam.reconnects == 1 and FlakyCapture.opens >= 2
        assert abs(int(luma_of(frame).mean()) - 200) < 30
    finally:
        cam.close()


# -- a microphone unplugged while running ---------------------------------------------------


class FlakyInputStream:
    """Stands in for ``sounddevice.InputStream``: a thread delivers 20 ms blocks (value =
    stream number) while ``plugged`` is set; opening fails while unplugged."""

    plugged = threading.Event()
    count = 0

    def __init__(self, **kwargs: Any) -> None:
        if not FlakyInputStream.plugged.is_set():
            raise RuntimeError("Error opening InputStream: Device unavailable")
        FlakyInputStream.count += 1
        self.number = FlakyInputStream.count
        self.kwargs = kwargs
        self._stop = threading.Event()

    def start(self) -> None:
        def deliver() -> None:
            while not self._stop.wait(0.02) and FlakyInputStream.plugged.is_set():
                block = np.full((960, 1), self.number, dtype=np.int16)
                self.kwargs["callback"](block, 960, None, None)

        threading.Thread(target=deliver, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()


async def test_unplugged_microphone_sends_silence_and_reopens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = SimpleNamespace(query_devices=lambda: FAKE_DEVICES,
                           default=SimpleNamespace(device=(1, 0)), InputStream=FlakyInputStream)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    FlakyInputStream.plugged.set()
    mic = MicrophoneAudioSource(None, stall_s=0.2, retry_s=0.3)
    try:
        frames = [await mic.read() for _ in range(5)]
        assert all(int(f.to_ndarray()[0, 0]) == 1 for f in frames) and mic.live
        FlakyInputStream.plugged.clear()
        silent = []
        for _ in range(40):  # 0.8 s of reads at 20 ms: the agent's track never blocks
            f = await asyncio.wait_for(mic.read(), 1.0)
            silent.append(f)
        assert not mic.live and mic.silent_frames >= 20
        assert not any(f.to_ndarray().any() for f in silent[-20:])
        FlakyInputStream.plugged.set()
        back = None
        for _ in range(200):
            f = await asyncio.wait_for(mic.read(), 1.0)
            if f.to_ndarray().any():
                back = f
                break
        assert back is not None and mic.live and mic.reopens >= 1
        assert int(back.to_ndarray()[0, 0]) >= 2  # from a newly opened stream
        pts = [f.pts for f in [*frames, *silent, back]]
        assert pts == sorted(pts) and len(set(pts)) == len(pts)  # pts keep increasing
    finally:
        mic.close()


# -- autostart ------------------------------------------------------------------------------


def test_systemd_unit_verifies_and_its_command_runs(tmp_path: Path) -> None:
    unit = ROOT / "deploy" / "systemd" / "syncclass-agent.service"
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    lines = unit.read_text(encoding="utf-8").splitlines()
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    prevent = next(line for line in lines if line.startswith("RestartPreventExitStatus="))
    assert prevent.split("=", 1)[1].split() == ["2", "3"]
    # Run ExecStart as systemd would, with the example env file (this checkout, the sample
    # config, a classroom id that does not exist): the agent must exit 2 with a clear error.
    env = dict(os.environ)
    for line in (unit.parent / "agent.env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    env.update(SYNCCLASS_HOME=str(ROOT), SYNCCLASS_CLASSROOM="no-such-room",
               SYNCCLASS_CONFIG=str(ROOT / "configs" / "county.yaml"))
    argv = exec_start.split("=", 1)[1]
    assert argv.startswith("/bin/sh -c '") and argv.endswith("'")
    r = subprocess.run(["/bin/sh", "-c", argv[len("/bin/sh -c '"):-1]], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown classroom 'no-such-room'" in r.stderr, r.stderr


def test_camera_by_name_in_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent import devices
    from edge_agent.devices import open_video_source
    from syncclass.config import VideoDeviceConfig

    (tmp_path / "video4").mkdir()
    (tmp_path / "video4" / "name").write_text("USB Document Camera\n")
    monkeypatch.setattr(device_list, "V4L2_SYSFS", tmp_path)
    opened: list[tuple[Any, Any]] = []

    class Recorder(CameraVideoSource):
        def __init__(self, index: Any, path: Any, *args: Any) -> None:
            opened.append((index, path))
            raise DeviceError("stop here")

    monkeypatch.setattr(devices, "CameraVideoSource", Recorder)
    cfg = VideoDeviceConfig(kind="camera", name="document")
    with pytest.raises(DeviceError, match="stop here"):
        open_video_source(cfg, label="x", source=1, fallback_to_synthetic=False)
    assert opened == [(4, "/dev/video4")]
    with pytest.raises(DeviceError, match=r"camera 'webcam': not found; available: \[4\]"):
        open_video_source(VideoDeviceConfig(kind="camera", name="webcam"), label="x",
                          source=1, fallback_to_synthetic=False)
