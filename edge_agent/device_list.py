"""Which cameras, microphones and speakers this classroom PC has, by name.

``syncclass agent devices`` prints this list so that whoever installs a classroom PC can
put a device's name (or index) into the config. Cameras: on Linux the V4L2 devices
(``/sys/class/video4linux``: name and ``/dev/videoN``); elsewhere (Windows, macOS) the
OpenCV indices that open. Audio: every PortAudio device sounddevice sees, with its host
API (ALSA, PulseAudio via ALSA, JACK, WASAPI, ...), channels and default rate.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from syncclass.errors import DeviceError

__all__ = [
    "AudioDeviceInfo",
    "CameraInfo",
    "DeviceList",
    "find_audio_device",
    "find_camera",
    "list_audio_devices",
    "list_cameras",
    "list_devices",
]

logger = logging.getLogger(__name__)

V4L2_SYSFS = Path("/sys/class/video4linux")


@dataclass(frozen=True)
class CameraInfo:
    index: int
    """OpenCV index (``devices.camera.index``)."""
    name: str
    """Name the driver reports, e.g. ``HD Pro Webcam C920``."""
    path: str | None
    """Device path (``devices.camera.path``), e.g. ``/dev/video0``; ``None`` off Linux."""


@dataclass(frozen=True)
class AudioDeviceInfo:
    index: int
    """PortAudio device index (``index`` in the config)."""
    name: str
    """Device name (``name`` in the config; a unique part of it is enough)."""
    host_api: str
    inputs: int
    """Input channels (a microphone has at least 1)."""
    outputs: int
    """Output channels (speakers have at least 1)."""
    default_rate_hz: float
    default_input: bool
    default_output: bool


@dataclass(frozen=True)
class DeviceList:
    cameras: list[CameraInfo]
    audio: list[AudioDeviceInfo]
    problems: list[str]
    """What could not be listed and why (e.g. no PortAudio)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_text(self) -> str:
        """A table for people (Chinese first, with English)."""
        lines = ["摄像头 Cameras:"]
        if not self.cameras:
            lines.append("  (无 none)")
        for c in self.cameras:
            where = f"  path: {c.path}" if c.path else ""
            lines.append(f"  [{c.index}] {c.name}{where}")
        lines.append("麦克风 Microphones:")
        mics = [d for d in self.audio if d.inputs]
        lines.extend(_audio_line(d, d.default_input) for d in mics)
        if not mics:
            lines.append("  (无 none)")
        lines.append("扬声器 Speakers:")
        spks = [d for d in self.audio if d.outputs]
        lines.extend(_audio_line(d, d.default_output) for d in spks)
        if not spks:
            lines.append("  (无 none)")
        for p in self.problems:
            lines.append(f"注意 Note: {p}")
        return "\n".join(lines)


def _audio_line(d: AudioDeviceInfo, default: bool) -> str:
    mark = " *默认 default*" if default else ""
    return (f"  [{d.index}] {d.name}  ({d.host_api}, in {d.inputs} / out {d.outputs}, "
            f"{d.default_rate_hz:g} Hz){mark}")


def list_cameras(max_probe: int = 4) -> list[CameraInfo]:
    """Cameras by name. Linux: V4L2 capture nodes from sysfs (no device is opened).
    Elsewhere: OpenCV indices ``0 .. max_probe - 1`` that open."""
    if sys.platform.startswith("linux"):
        cams = []
        if V4L2_SYSFS.is_dir():
            for node in sorted(V4L2_SYSFS.glob("video*"), key=lambda p: int(p.name[5:] or 0)):
                index = int(node.name[5:])
                # Only the first node of a camera captures (index 0); others are metadata.
                idx_file = node / "index"
                if idx_file.is_file() and idx_file.read_text().strip() not in ("", "0"):
                    continue
                name_file = node / "name"
                name = name_file.read_text().strip() if name_file.is_file() else node.name
                cams.append(CameraInfo(index=index, name=name, path=f"/dev/{node.name}"))
        return cams
    import cv2

    found = []
    for i in range(max_probe):
        cap = cv2.VideoCapture(i)
        try:
            if cap.isOpened():
                found.append(CameraInfo(index=i, name=f"camera {i}", path=None))
        finally:
            cap.release()
    return found


def find_camera(name: str) -> CameraInfo:
    """The camera whose name is ``name`` or uniquely contains it (case-insensitive);
    :class:`DeviceError` listing the cameras otherwise."""
    cams = list_cameras()
    listing = ", ".join(f"[{c.index}] {c.name!r}" for c in cams) or "none"
    matches = [c for c in cams if name.lower() in c.name.lower()]
    exact = [c for c in matches if c.name == name]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"camera {name!r}: not found; available: {listing}")
    raise DeviceError(f"camera {name!r}: ambiguous, matches "
                      f"{', '.join(repr(c.name) for c in matches)}")


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise DeviceError(f"audio devices: sounddevice/PortAudio is not available: {exc}"
                          ) from None
    return sounddevice


def list_audio_devices() -> list[AudioDeviceInfo]:
    """Every PortAudio device with its host API and channel counts."""
    sd = _sounddevice()
    try:
        devices = list(sd.query_devices())
        apis = [str(a["name"]) for a in sd.query_hostapis()]
        default_in, default_out = sd.default.device
    except Exception as exc:  # PortAudioError
        raise DeviceError(f"audio devices: cannot list: {exc}") from None
    return [
        AudioDeviceInfo(
            index=i, name=str(d["name"]), host_api=apis[d["hostapi"]] if d["hostapi"] < len(
                apis) else "?",
            inputs=int(d["max_input_channels"]), outputs=int(d["max_output_channels"]),
            default_rate_hz=float(d["default_samplerate"]),
            default_input=i == default_in, default_output=i == default_out,
        )
        for i, d in enumerate(devices)
    ]


def list_devices() -> DeviceList:
    """Cameras and audio devices; whatever cannot be listed goes into ``problems``."""
    problems: list[str] = []
    try:
        cameras = list_cameras()
    except Exception as exc:  # a broken driver must not hide the audio list
        cameras = []
        problems.append(f"cameras: {exc}")
    try:
        audio = list_audio_devices()
    except DeviceError as exc:
        audio = []
        problems.append(str(exc))
    return DeviceList(cameras=cameras, audio=audio, problems=problems)


def find_audio_device(sd: Any, name: str | None, index: int | None,
                      direction: Literal["input", "output"]) -> tuple[int, str]:
    """The PortAudio ``(index, name)`` of the ``direction`` device chosen by ``index``,
    else by ``name`` (exact, or a unique case-insensitive part), else the default one.

    Raises :class:`DeviceError` listing the available devices when none matches.
    """
    label = "microphone" if direction == "input" else "speakers"
    key = "max_input_channels" if direction == "input" else "max_output_channels"
    try:
        devices = list(sd.query_devices())
    except Exception as exc:
        raise DeviceError(f"{label}: cannot list audio devices: {exc}") from None
    usable = [(i, str(d["name"])) for i, d in enumerate(devices) if d[key]]
    listing = ", ".join(f"[{i}] {n!r}" for i, n in usable) or "none"
    if index is not None:
        for i, n in usable:
            if i == index:
                return i, n
        raise DeviceError(f"{label} index {index}: no such {direction} device; "
                          f"available: {listing}")
    if name is None:
        default = sd.default.device[0 if direction == "input" else 1]
        for i, n in usable:
            if i == default:
                return i, n
        if usable and (default is None or default < 0):
            return usable[0]
        raise DeviceError(f"{label}: no default {direction} device; available: {listing}")
    matches = [(i, n) for i, n in usable if name.lower() in n.lower()]
    exact = [(i, n) for i, n in matches if n == name]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"{label} {name!r}: not found; available: {listing}")
    found = ", ".join(repr(n) for _, n in matches)
    raise DeviceError(f"{label} {name!r}: ambiguous, matches {found}")
