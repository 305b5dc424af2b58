"""Crash-safe lesson segments: MPEG-TS files of about ``segment_s`` each, plus a journal.

A lesson's folder::

    <out_dir>/<lesson_id>/
        meta.json          the lesson's metadata (latest copy from the mixer)
        journal.jsonl      one JSON line per finished segment, gap, error, end (fsync'd)
        index.m3u8         an HLS EVENT playlist of the finished segments (plays live)
        segments/seg_000012.ts       finished segments (renamed from .part when complete)
        segments/seg_000013.ts.part  the open segment

Why MPEG-TS: the mixer's packets are annex-B H.264 with SPS/PPS in-band on every IDR,
and audio comes as ADTS AAC; TS carries both as they are, needs no index, and every
segment starts at an IDR, so each file plays alone and a cut-off file plays up to the
cut. Timestamps are the mixer's (90 kHz video, 48 kHz audio, one origin; see
:mod:`syncclass.recorder_wire`), so segments written by a restarted recorder line up with the
earlier ones and a gap stays a gap in time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from syncclass.config import is_lesson_id
from syncclass.private_files import FILE_MODE, create_private, private_dir, write_private
from syncclass.protocol import dumps_strict
from syncclass.recorder_wire import AUDIO_RATE, VIDEO_RATE, LessonMeta

logger = logging.getLogger(__name__)

VIDEO_TB = Fraction(1, VIDEO_RATE)
AUDIO_TB = Fraction(1, AUDIO_RATE)
TS_PACKET = 188
GAP_MIN_S = 0.5
"""A jump in video time longer than this is recorded as a gap (seconds)."""


class DiskError(OSError):
    """Writing the recording failed (full disk, read-only, missing folder)."""


@dataclass
class SegmentInfo:
    index: int
    file: str
    """Path relative to the lesson folder."""
    start_pts: int
    """First video pts (1/90000 s)."""
    end_pts: int
    """Last video pts plus one frame (1/90000 s)."""
    video_packets: int
    audio_packets: int
    bytes: int
    sha256: str
    salvaged: bool = False
    """Recovered from a cut-off ``.part`` after a crash."""

    @property
    def duration_s(self) -> float:
        return (self.end_pts - self.start_pts) / VIDEO_RATE


@dataclass
class Gap:
    start_pts: int
    end_pts: int
    reason: str

    @property
    def duration_s(self) -> float:
        return (self.end_pts - self.start_pts) / VIDEO_RATE


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class SegmentWriter:
    """One open MPEG-TS segment (``.part`` until :meth:`finish` renames it)."""

    def __init__(self, path: Path, index: int, meta: LessonMeta) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.index = index
        self.start_pts: int | None = None
        self.last_video_pts: int | None = None
        self.video_packets = 0
        self.audio_packets = 0
        self.frame_ticks = round(VIDEO_RATE / meta.fps)
        try:
            create_private(self.part)  # av keeps the mode of the file it truncates
            self._out = av.open(str(self.part), "w", format="mpegts")
        except (OSError, av.error.FFmpegError) as exc:
            raise DiskError(f"cannot create segment {self.part}: {exc}") from exc
        video: Any = self._out.add_mux_stream("h264")
        video.width = meta.width
        video.height = meta.height
        video.time_base = VIDEO_TB
        self._v = video
        self._a = self._out.add_mux_stream("aac", rate=AUDIO_RATE)
        self._a.time_base = AUDIO_TB

    def _mux(self, packet: av.Packet) -> None:
        try:
            self._out.mux(packet)
        except (OSError, av.error.FFmpegError) as exc:
            raise DiskError(f"cannot write segment {self.part}: {exc}") from exc

    def write_video(self, payload: bytes, pts: int, key: bool) -> None:
        packet = av.Packet(payload)
        packet.pts = packet.dts = pts
        packet.time_base = VIDEO_TB
        packet.stream = self._v
        packet.is_keyframe = key
        self._mux(packet)
        if self.start_pts is None:
            self.start_pts = pts
        self.last_video_pts = pts
        self.video_packets += 1

    def write_audio(self, payload: bytes, pts: int) -> None:
        if self.start_pts is None:
            return  # a segment starts with its IDR
        packet = av.Packet(payload)
        packet.pts = packet.dts = pts
        packet.time_base = AUDIO_TB
        packet.stream = self._a
        self._mux(packet)
        self.audio_packets += 1

    def finish(self) -> SegmentInfo:
        """Flush, fsync and rename to the final name; returns its journal entry."""
        try:
            self._out.close()
            with self.part.open("rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.part, self.path)
        except (OSError, av.error.FFmpegError) as exc:
            raise DiskError(f"cannot finish segment {self.path}: {exc}") from exc
        _fsync_dir(self.path.parent)
        start = self.start_pts or 0
        end = (self.last_video_pts or start) + self.frame_ticks
        return SegmentInfo(self.index, f"segments/{self.path.name}", start, end,
                           self.video_packets, self.audio_packets, self.path.stat().st_size,
                           sha256_file(self.path))

    def abandon(self) -> None:
        """Drop the open segment (e.g. the disk is full): close quietly, delete the part."""
        with contextlib.suppress(Exception):
            self._out.close()
        with contextlib.suppress(OSError):
            self.part.unlink()


def salvage_part(part: Path, index: int, fps: float) -> SegmentInfo | None:
    """Recover a cut-off ``.part`` segment left by a crash: trim to whole TS packets,
    check that it demuxes and starts with video, and rename it. None if nothing usable."""
    try:
        size = part.stat().st_size
        usable = size - size % TS_PACKET
        if usable < TS_PACKET * 4:
            part.unlink()
            return None
        if usable != size:
            os.truncate(part, usable)
        first = last = None
        video = audio = 0
        with av.open(str(part), "r", format="mpegts") as container:
            for packet in container.demux():
                if packet.pts is None or packet.size == 0:
                    continue
                if packet.stream.type == "video":
                    pts = round(packet.pts * packet.time_base * VIDEO_RATE)
                    first = pts if first is None else first
                    last = pts
                    video += 1
                elif packet.stream.type == "audio":
                    audio += 1
    except (OSError, av.error.FFmpegError, ValueError) as exc:
        logger.warning("cannot salvage %s: %s", part, exc)
        with contextlib.suppress(OSError):
            part.unlink()
        return None
    if first is None or last is None or video < 2:
        with contextlib.suppress(OSError):
            part.unlink()
        return None
    final = part.with_name(part.name.removesuffix(".part"))
    os.replace(part, final)
    _fsync_dir(final.parent)
    # The last packet may be cut short: count the segment as ending at its last packet.
    info = SegmentInfo(index, f"segments/{final.name}", first, last, video, audio,
                       final.stat().st_size, sha256_file(final), salvaged=True)
    logger.info("salvaged %s: %.2f s, %d video packets", final, info.duration_s, video)
    return info


@dataclass
class Journal:
    """What has been durably written of a lesson (rebuilt from ``journal.jsonl``)."""

    segments: list[SegmentInfo] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    finalized: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: Path) -> Journal:
        j = cls()
        if not path.exists():
            return j
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            kind = entry.pop("t", None)
            if kind == "segment":
                j.segments.append(SegmentInfo(**entry))
            elif kind == "gap":
                j.gaps.append(Gap(**entry))
            elif kind == "error":
                j.errors.append(entry)
            elif kind == "superseded":
                j.segments = [x for x in j.segments if x.index != entry.get("index")]
            elif kind == "end":
                j.end = entry
            elif kind == "finalized":
                j.finalized = entry
        return j


class LessonRecording:
    """Writes one lesson's segments; all methods raise :class:`DiskError` on write failure
    after leaving the recording consistent (the open segment is dropped, a gap follows)."""

    def __init__(self, root: Path, meta: LessonMeta, segment_s: float) -> None:
        if not is_lesson_id(meta.lesson_id):  # the last guard before it names a folder
            raise DiskError(f"lesson id {meta.lesson_id[:80]!r} is not a lesson id; "
                            "nothing written")
        self.root = root
        self.meta = meta
        self.segment_ticks = round(segment_s * VIDEO_RATE)
        self.dir = root / meta.lesson_id
        self.seg_dir = self.dir / "segments"
        self.journal_path = self.dir / "journal.jsonl"
        self._writer: SegmentWriter | None = None
        self.last_end_pts: int | None = None
        self.recorded_until: int | None = None
        """pts of the last video packet recorded (1/90000 s): a replayed packet at or
        before it is already in a segment. (``last_end_pts`` adds one nominal frame, but
        the mixer stamps frames by its clock, so the next packet may come sooner.)"""
        self.frame_ticks = round(VIDEO_RATE / meta.fps)
        """End (pts + one frame) of the last video written, 1/90000 s."""
        self.gap_reason: str | None = "recorder_restart"
        """Why the next jump in video time (if any) is a gap in the recording; None: a jump
        is the mixer's own (e.g. composition paused under load) and is no gap."""
        self._resume_seen_min: int | None = None
        self._resume_dropped_max: int | None = None
        """While resuming (``gap_reason`` is ``recorder_restart``): the lowest video pts seen
        and the highest non-key pts dropped while waiting for a keyframe (1/90000 s)."""
        self.messages = 0
        self.lost_messages = 0
        self.duplicates = 0
        self.stale = 0
        """Media messages dropped because they came on a clock not yet announced by meta."""
        self.last_seq: int | None = None
        self.journal = Journal.load(self.journal_path)
        self.base_t0_ms = self._saved_t0_ms(meta)
        """Epoch ms of the lesson's pts 0: the first mixer clock's origin, kept across
        mixer restarts (written to ``meta.json``; segment pts count from here)."""
        self.clock = int(meta.t0_epoch_ms)
        """The mixer clock now being recorded (:attr:`syncclass.recorder_wire.Header.t0`)."""
        self.video_offset = self.audio_offset = 0
        """Added to incoming pts to place the current clock on the lesson's (ticks)."""
        self._replace: SegmentInfo | None = None
        """A salvaged cut-off last segment that the mixer's replay may record again whole."""
        try:
            private_dir(self.dir, own=True)  # minors' data: owner only (0700 / 0600)
            private_dir(self.seg_dir, own=True)
            self.write_meta(meta)
        except OSError as exc:
            raise DiskError(f"cannot create lesson folder {self.dir}: {exc}") from exc
        self._set_clock(meta)
        self._recover()

    def _saved_t0_ms(self, meta: LessonMeta) -> float:
        """The lesson's pts origin: from an earlier run's ``meta.json``, else ``meta``'s."""
        with contextlib.suppress(OSError, ValueError):
            saved = LessonMeta.parse((self.dir / "meta.json").read_bytes())
            if saved.lesson_id == meta.lesson_id:
                return saved.t0_epoch_ms
        return meta.t0_epoch_ms

    def _set_clock(self, meta: LessonMeta) -> None:
        self.clock = int(meta.t0_epoch_ms)
        delta_ms = meta.t0_epoch_ms - self.base_t0_ms
        self.video_offset = round(delta_ms * VIDEO_RATE / 1000)
        self.audio_offset = round(delta_ms * AUDIO_RATE / 1000)

    def rebase(self, meta: LessonMeta) -> bool:
        """A ``meta`` on a new mixer clock (the mixer restarted mid-lesson): close the open
        segment and place the new clock's pts after the old ones, by the clocks' epoch
        difference. The time between is a gap. False if ``meta`` is on the current clock."""
        if int(meta.t0_epoch_ms) == self.clock:
            return False
        old = self.clock
        self._finish_segment()
        self._set_clock(meta)
        self.last_seq = None
        self.gap_reason = self.gap_reason or "mixer_restart"
        if self._replace is not None:  # the replay that could redo it is gone with the mixer
            self._keep_salvaged()
        logger.info("lesson %s: the mixer's clock changed (t0 %d → %d ms): a restarted "
                    "mixer; recording continues %.2f s into the lesson", self.meta.lesson_id,
                    old, self.clock, self.video_offset / VIDEO_RATE)
        self.write_meta(meta)
        return True

    @property
    def next_index(self) -> int:
        return max((s.index for s in self.journal.segments), default=-1) + 1

    def _recover(self) -> None:
        """Resume after a crash: salvage cut-off segments, continue after the last one."""
        for part in sorted(self.seg_dir.glob("seg_*.ts.part")):
            try:
                index = int(part.name[len("seg_"):].split(".")[0])
            except ValueError:
                continue
            info = salvage_part(part, index, self.meta.fps)
            if info is not None:
                self._append({"t": "segment", **asdict(info)})
                self.journal.segments.append(info)
        known = {s.file for s in self.journal.segments}
        for seg in sorted(self.seg_dir.glob("seg_*.ts")):
            if f"segments/{seg.name}" not in known:
                logger.warning("lesson %s: %s is not in the journal (ignored)",
                               self.meta.lesson_id, seg.name)
        self._drop_overlaps()
        if self.journal.segments:
            last = max(self.journal.segments, key=lambda x: x.end_pts)
            self.last_end_pts = last.end_pts
            self.recorded_until = max(
                s.end_pts if s.salvaged else s.end_pts - self.frame_ticks
                for s in self.journal.segments)
            if last.salvaged and self.journal.end is None:
                # Cut off mid-GOP by the crash: the mixer replays its last seconds from a
                # keyframe, so the whole segment can be recorded again from its start.
                self._replace = last
                self.last_end_pts = last.start_pts
                self.recorded_until = last.start_pts - 1
            self._write_playlist()

    def _keep_salvaged(self) -> None:
        """The salvaged segment stays: continue after it."""
        assert self._replace is not None
        self.last_end_pts = max(self.last_end_pts or 0, self._replace.end_pts)
        self.recorded_until = max(self.recorded_until or 0, self._replace.end_pts)
        self._replace = None

    def _drop_overlaps(self) -> None:
        """Two segments from the same keyframe (a crash while a salvaged segment was being
        recorded again): keep the longer, journal the other as superseded."""
        by_start: dict[int, SegmentInfo] = {}
        for seg in sorted(self.journal.segments, key=lambda x: x.index):
            other = by_start.get(seg.start_pts)
            if other is None:
                by_start[seg.start_pts] = seg
                continue
            keep, drop = (seg, other) if seg.end_pts > other.end_pts else (other, seg)
            by_start[seg.start_pts] = keep
            self._supersede(drop)

    def _supersede(self, seg: SegmentInfo) -> None:
        self._append({"t": "superseded", "index": seg.index})
        self.journal.segments = [x for x in self.journal.segments if x.index != seg.index]
        with contextlib.suppress(OSError):
            (self.dir / seg.file).unlink()
        logger.info("lesson %s: segment %d replaced by a complete recording of its time",
                    self.meta.lesson_id, seg.index)

    def update_meta(self, meta: LessonMeta) -> None:
        """A ``meta`` message: follow a new mixer clock, save changed metadata."""
        if not self.rebase(meta) and replace(meta, t0_epoch_ms=self.base_t0_ms) != self.meta:
            self.write_meta(meta)

    def write_meta(self, meta: LessonMeta) -> None:
        """Keep ``meta`` (with the lesson's pts origin, :attr:`base_t0_ms`) in meta.json."""
        if meta.t0_epoch_ms != self.base_t0_ms:
            meta = replace(meta, t0_epoch_ms=self.base_t0_ms)
        self.meta = meta
        tmp = self.dir / "meta.json.tmp"
        write_private(tmp, dumps_strict(meta.to_dict(), ensure_ascii=False, indent=1))
        os.replace(tmp, self.dir / "meta.json")

    def _append(self, entry: dict[str, Any]) -> None:
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(dumps_strict(entry, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise DiskError(f"cannot write journal {self.journal_path}: {exc}") from exc

    def note_seq(self, seq: int) -> None:
        """Account for a media message's ``seq``; a jump means media was lost."""
        if self.last_seq is not None and seq > self.last_seq + 1:
            self.lost_messages += seq - self.last_seq - 1
            self.gap_reason = self.gap_reason or "lost_packets"
            self._resume_dropped_max = 1 << 62  # a hole in the replay: no continuity
        self.last_seq = seq
        self.messages += 1

    def video(self, payload: bytes, pts: int, key: bool) -> None:
        """One video packet, ``pts`` on the current mixer clock (1/90000 s)."""
        pts += self.video_offset
        writer = self._writer
        if writer is not None and key and writer.start_pts is not None and (
            pts - writer.start_pts >= self.segment_ticks - writer.frame_ticks // 2
        ):
            self._finish_segment()
            writer = None
        if writer is None:
            resuming = self.gap_reason == "recorder_restart"
            if resuming:
                seen = self._resume_seen_min
                self._resume_seen_min = pts if seen is None else min(pts, seen)
            if not key:
                if resuming:
                    dropped = self._resume_dropped_max
                    self._resume_dropped_max = pts if dropped is None else max(pts, dropped)
                return  # wait for an IDR to start a segment
            if self._replace is not None and pts > self._replace.start_pts:
                self._keep_salvaged()  # the replay does not reach back to its keyframe
            if self.recorded_until is not None and pts <= self.recorded_until:
                return  # replayed after a restart: this part is already recorded
            self._check_gap(pts)
            path = self.seg_dir / f"seg_{self.next_index:06d}.ts"
            writer = self._writer = SegmentWriter(path, self.next_index, self.meta)
        elif self.last_end_pts is not None:
            self._check_gap(pts)
        try:
            writer.write_video(payload, pts, key)
        except DiskError:
            self.drop_open_segment("disk_error")
            raise
        self.last_end_pts = pts + writer.frame_ticks
        self.recorded_until = pts

    def _check_gap(self, pts: int) -> None:
        if self.gap_reason == "recorder_restart":
            logger.info("lesson %s: resuming at pts %d (recorded up to %s; replay seen from "
                        "%s, non-key dropped up to %s)", self.meta.lesson_id, pts,
                        self.last_end_pts, self._resume_seen_min, self._resume_dropped_max)
        reason, self.gap_reason = self.gap_reason, None
        if reason == "recorder_restart" and self._replay_was_continuous():
            reason = None  # nothing missed: a jump in time is the mixer's own
        if self.last_end_pts is None or reason is None:
            return
        if pts - self.last_end_pts > GAP_MIN_S * VIDEO_RATE:
            gap = Gap(self.last_end_pts, pts, reason)
            self.journal.gaps.append(gap)
            logger.warning("lesson %s: gap of %.2f s (%s)", self.meta.lesson_id,
                           gap.duration_s, gap.reason)
            self._append({"t": "gap", **asdict(gap)})

    def _replay_was_continuous(self) -> bool:
        """After a recorder restart: did the mixer's replay reach back into what is already
        recorded, with no message lost and no non-key packet dropped past it? Then the
        recording continues without a hole (whatever the jump in pts)."""
        until = self.recorded_until
        if until is None or self._resume_seen_min is None:
            return False
        dropped = self._resume_dropped_max
        return self._resume_seen_min <= until and (dropped is None or dropped <= until)

    def audio(self, payload: bytes, pts: int) -> None:
        """One AAC packet, ``pts`` on the current mixer clock (1/48000 s)."""
        if self._writer is None:
            return
        try:
            self._writer.write_audio(payload, pts + self.audio_offset)
        except DiskError:
            self.drop_open_segment("disk_error")
            raise

    def _finish_segment(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None or writer.start_pts is None:
            if writer is not None:
                writer.abandon()
            return
        try:
            info = writer.finish()
            self._append({"t": "segment", **asdict(info)})
        except DiskError:
            writer.abandon()
            self.gap_reason = "disk_error"
            raise
        self.journal.segments.append(info)
        replaced, self._replace = self._replace, None
        if replaced is not None and info.start_pts <= replaced.start_pts:
            self._supersede(replaced)
        self._write_playlist()
        logger.debug("lesson %s: segment %d done (%.2f s, %d bytes)", self.meta.lesson_id,
                     info.index, info.duration_s, info.bytes)

    def drop_open_segment(self, reason: str) -> None:
        """Abandon the open segment (its time becomes a gap of ``reason``)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abandon()
        self.gap_reason = reason

    def record_error(self, message: str) -> None:
        entry = {"t": "error", "message": message}
        self.journal.errors.append(entry)
        with contextlib.suppress(DiskError):
            self._append(entry)

    def close(self, reason: str, ended_ms: int | None = None) -> None:
        """The lesson ended (``reason``, at epoch ms ``ended_ms`` if known): finish the
        open segment and journal the end."""
        try:
            self._finish_segment()
        finally:
            end = {"reason": reason, "last_end_pts": self.last_end_pts, "ended_ms": ended_ms}
            self.journal.end = end
            with contextlib.suppress(DiskError):
                self._append({"t": "end", **end})
                self._write_playlist(ended=True)

    def _write_playlist(self, ended: bool = False) -> None:
        segs = sorted(self.journal.segments, key=lambda s: s.index)
        target = max([2, *(int(s.duration_s + 0.999) for s in segs)])
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}",
                 "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-MEDIA-SEQUENCE:0"]
        prev_end: int | None = None
        for s in segs:
            if prev_end is not None and s.start_pts - prev_end > GAP_MIN_S * VIDEO_RATE:
                lines.append("#EXT-X-DISCONTINUITY")
            lines += [f"#EXTINF:{max(s.duration_s, 0.001):.3f},", s.file]
            prev_end = s.end_pts
        if ended:
            lines.append("#EXT-X-ENDLIST")
        tmp = self.dir / "index.m3u8.tmp"
        try:
            write_private(tmp, "\n".join(lines) + "\n")
            os.replace(tmp, self.dir / "index.m3u8")
        except OSError as exc:
            raise DiskError(f"cannot write playlist in {self.dir}: {exc}") from exc
