"""The mixer → recorder wire format (pure: bytes in, messages out; no sockets).

The mixer's :class:`mixer.publisher.RecordingPublisher` binds a ZeroMQ XPUB socket; each
recorder connects an XSUB socket. Every message is two frames::

    header  JSON object, UTF-8: {"v": 1, "kind": ..., "lesson": ..., "seq": ..., ...}
    payload bytes (empty for control messages)

Kinds (``kind``):

- ``meta``  — the lesson's metadata (:class:`LessonMeta` as JSON in the payload). Sent when
  the lesson starts and again every ``meta_interval_s``, so a recorder that (re)starts
  mid-lesson learns everything it needs from the next one.
- ``video`` — one encoded packet of the recorded view, exactly as sent to classrooms:
  H.264 annex-B, SPS/PPS in-band before every IDR. ``pts`` in 1/90000 s, ``key`` true on
  IDR packets.
- ``audio`` — one AAC-LC packet of the full mix with its ADTS header (self-describing:
  no extradata needed). ``pts`` in 1/48000 s.
- ``end``   — the lesson ended (no more packets will come).

Clock: ``pts`` of both streams count from the same origin, the lesson media's monotonic
``t0`` (:class:`mixer.media.LessonMedia`); ``LessonMeta.t0_epoch_ms`` is the wall-clock time
of that origin, so ``epoch_ms = t0_epoch_ms + pts / rate * 1000``.

``t0`` in every header names the media clock (its origin in whole epoch ms): a mixer
restarted mid-lesson starts a new clock, and the recorder places the new clock's pts after
the old ones (``t0`` difference) and resets its ``seq`` bookkeeping.

``seq`` increases by one per media message (``video``/``audio``) of a lesson; ``meta`` and
``end`` carry the next media seq without using it. A recorder that sees a jump knows media
was lost (publisher drops) and records a gap; a seq it already has is a replay (see
``RecorderConfig.replay_s``) and is skipped.

Recorder → mixer: a recorder sends single-frame JSON reports upstream on its XSUB socket
(:class:`Report`); ZeroMQ passes them to the XPUB socket (frames starting with byte 0 or
1 are subscriptions, so JSON objects, which start with ``{``, are never mistaken for one).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

from syncclass.config import is_lesson_id

WIRE_VERSION = 1
VIDEO_RATE = 90000
"""Video pts ticks per second."""
AUDIO_RATE = 48000
"""Audio pts ticks (samples) per second."""

MessageKind = Literal["meta", "video", "audio", "end"]
_KINDS = ("meta", "video", "audio", "end")
ReportKind = Literal["hello", "progress", "recording_ready", "alert"]
_REPORT_KINDS = ("hello", "progress", "recording_ready", "alert")


@dataclass(frozen=True)
class Header:
    kind: MessageKind
    lesson: str
    seq: int
    pts: int = 0
    """Presentation time in the stream's ticks (video 1/90000 s, audio 1/48000 s)."""
    key: bool = False
    """Video: the packet is an IDR (a segment may start here)."""
    t0: int = 0
    """The sending media clock's origin, whole epoch ms (``LessonMeta.t0_epoch_ms``): it
    names the clock ``pts`` and ``seq`` count on. A mixer restarted mid-lesson starts a new
    clock (pts and seq from 0 again); 0 means unknown (an older sender)."""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"v": WIRE_VERSION, "kind": self.kind, "lesson": self.lesson, "seq": self.seq,
             "pts": self.pts, "key": self.key, "t0": self.t0},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def parse(cls, data: bytes) -> Header:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("recording header is not JSON") from None
        if not isinstance(obj, dict):
            raise ValueError("recording header is not a JSON object")
        if obj.get("v") != WIRE_VERSION:
            raise ValueError(f"recording header version {obj.get('v')!r} is not {WIRE_VERSION}")
        kind = obj.get("kind")
        if kind not in _KINDS:
            raise ValueError(f"recording header kind {kind!r} is unknown")
        lesson, seq, pts = obj.get("lesson"), obj.get("seq"), obj.get("pts", 0)
        if not is_lesson_id(lesson):  # it names the lesson's folder
            raise ValueError(f"recording header lesson {str(lesson)[:80]!r} is invalid")
        if not isinstance(seq, int) or seq < 0:
            raise ValueError(f"recording header seq {seq!r} is invalid")
        if not isinstance(pts, int):
            raise ValueError(f"recording header pts {pts!r} is invalid")
        t0 = obj.get("t0", 0)
        if not isinstance(t0, int) or isinstance(t0, bool) or t0 < 0:
            raise ValueError(f"recording header t0 {t0!r} is invalid")
        return cls(cast(MessageKind, kind), lesson, seq, pts, bool(obj.get("key", False)), t0)


@dataclass(frozen=True)
class ClassroomMeta:
    id: str
    name: str
    role: str
    school_id: str
    school_name: str


@dataclass(frozen=True)
class LessonMeta:
    """Everything the archive needs to describe a lesson (sent in ``meta`` messages)."""

    lesson_id: str
    pairing_id: str
    subject: str
    grade: str
    teacher: str
    timetable_id: str | None
    started_ms: int | None
    """Epoch ms when the lesson started."""
    t0_epoch_ms: float
    """Epoch ms of pts 0 (the lesson media clock's origin)."""
    view: str
    """Name of the recorded view."""
    width: int
    height: int
    fps: float
    classrooms: list[ClassroomMeta] = field(default_factory=list)
    county: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, data: bytes | dict[str, Any]) -> LessonMeta:
        try:
            obj = json.loads(data) if isinstance(data, bytes) else dict(data)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            rooms = [ClassroomMeta(**c) for c in obj.pop("classrooms", [])]
            meta = cls(classrooms=rooms, **obj)
            positive = meta.width > 0 and meta.height > 0 and meta.fps > 0
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"lesson metadata is invalid: {exc}") from None
        if not positive:
            raise ValueError("lesson metadata has a non-positive size or fps")
        if not is_lesson_id(meta.lesson_id):  # it names the lesson's folder
            raise ValueError(f"lesson metadata lesson_id {str(meta.lesson_id)[:80]!r} is "
                             "not a lesson id")
        return meta


@dataclass(frozen=True)
class Report:
    """A recorder's message to the mixer."""

    kind: ReportKind
    recorder: str
    """The recorder's name (host:pid)."""
    lesson: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode()

    @classmethod
    def parse(cls, data: bytes) -> Report:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("recorder report is not JSON") from None
        if not isinstance(obj, dict) or obj.get("kind") not in _REPORT_KINDS:
            raise ValueError("recorder report has no known kind")
        data_obj, lesson = obj.get("data") or {}, obj.get("lesson")
        if not isinstance(data_obj, dict) or not (lesson is None or is_lesson_id(lesson)):
            raise ValueError("recorder report has malformed 'data' or 'lesson'")
        return cls(obj["kind"], str(obj.get("recorder", "?")), lesson, dict(data_obj))


_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
               11025, 8000, 7350)


def adts_header(payload_len: int, sample_rate: int = AUDIO_RATE, channels: int = 1) -> bytes:
    """The 7-byte ADTS header (no CRC) of one raw AAC-LC frame of ``payload_len`` bytes."""
    if sample_rate not in _ADTS_RATES:
        raise ValueError(f"ADTS has no sample rate {sample_rate} Hz")
    if not 1 <= channels <= 7:
        raise ValueError(f"ADTS channel configuration {channels} is invalid")
    length = payload_len + 7
    if length >= 1 << 13:
        raise ValueError(f"AAC frame of {payload_len} bytes is too long for ADTS")
    rate_index = _ADTS_RATES.index(sample_rate)
    profile = 1  # AAC LC (audio object type 2) minus one
    return bytes(
        [
            0xFF,
            0xF1,  # sync, MPEG-4, layer 0, no CRC
            (profile << 6) | (rate_index << 2) | (channels >> 2),
            ((channels & 3) << 6) | (length >> 11),
            (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F,
            0xFC,  # buffer fullness 0x7FF (VBR), one raw block
        ]
    )
