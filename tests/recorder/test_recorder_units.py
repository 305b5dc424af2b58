"""Recorder pieces without a mixer: wire format, segments, crash recovery, finalising,
full disk, local archive. Media is real: H.264 from the project's encoder, AAC from FFmpeg.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fractions
import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from recorder.archive import Job, LocalArchive, Spool
from recorder.finalize import finalize_lesson, probe
from recorder.segments import DiskError, Journal, LessonRecording
from recorder.wire import AUDIO_RATE, ClassroomMeta, Header, LessonMeta, Report, adts_header
from syncclass.codec import H264Encoder
from syncclass.errors import RecordingError

W, H, FPS = 320, 240, 15.0
FRAME_TICKS = 6000  # 90 kHz at 15 fps


def make_meta(lesson_id: str = "math-g3-20260101-083000-1") -> LessonMeta:
    return LessonMeta(
        lesson_id=lesson_id, pairing_id="p", subject="数学", grade="三年级", teacher="王老师",
        timetable_id="math-g3", started_ms=1_700_000_000_000, t0_epoch_ms=1_700_000_000_000.0,
        view="students_view", width=W, height=H, fps=FPS,
        classrooms=[ClassroomMeta("main-3-1", "实验小学 三(1)班", "main", "s1", "县第一实验小学"),
                    ClassroomMeta("hetou-3", "河头村教学点", "receiving", "s2", "河头村教学点")],
        county="示范县",
    )


class MediaSource:
    """H.264 (the mixer's encoder, keyframe every 2 s) and ADTS AAC on one clock."""

    def __init__(self) -> None:
        self.enc = H264Encoder(W, H, FPS, 400, 2.0, 0.5, threads=1)
        self.aac = av.CodecContext.create("aac", "w")
        self.aac.sample_rate = AUDIO_RATE
        self.aac.layout = "mono"
        self.aac.format = "fltp"
        self.aac.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.aac.open()
        self.frame = 0
        self.audio_pts: int | None = None

    def step(self, pts90k: int) -> tuple[list[tuple[bytes, int, bool]], list[tuple[bytes, int]]]:
        """One video frame at ``pts90k`` and the audio up to it."""
        shade = (self.frame * 7) % 200 + 20
        img = np.full((H, W, 3), shade, np.uint8)
        img[: H // 2, : W // 2] = 255 - shade
        vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        vf.pts = pts90k
        video = [(bytes(p), int(p.pts or 0), bool(p.is_keyframe)) for p in self.enc.encode(vf)]
        self.frame += 1
        audio = []
        target = pts90k * AUDIO_RATE // 90000
        if self.audio_pts is None:
            self.audio_pts = target
        while self.audio_pts < target:
            t = (np.arange(960) + self.audio_pts) / AUDIO_RATE
            samples = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).reshape(1, -1)
            af = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            af.sample_rate = AUDIO_RATE
            af.pts = self.audio_pts
            af.time_base = fractions.Fraction(1, AUDIO_RATE)
            for p in self.aac.encode(af):
                raw = bytes(p)
                audio.append((adts_header(len(raw)) + raw, int(p.pts or 0)))
            self.audio_pts += 960
        return video, audio


def feed(rec: LessonRecording, src: MediaSource, start_pts: int, frames: int) -> int:
    pts = start_pts
    for _ in range(frames):
        video, audio = src.step(pts)
        for payload, apts in audio:
            rec.audio(payload, apts)
        for payload, vpts, key in video:
            rec.video(payload, vpts, key)
        pts += FRAME_TICKS
    return pts


def decode_count(path: Path) -> tuple[int, int]:
    """(decoded video frames, decoded audio samples) of a media file."""
    frames = samples = 0
    with av.open(str(path)) as c:
        for packet in c.demux():
            for f in packet.decode():
                if isinstance(f, av.VideoFrame):
                    frames += 1
                elif isinstance(f, av.AudioFrame):
                    samples += f.samples
    return frames, samples


# -- wire ---------------------------------------------------------------------------------------
def test_wire_round_trip_and_bad_input() -> None:
    h = Header("video", "lesson-1", 42, 123456, True, 1_700_000_000_000)
    assert Header.parse(h.to_bytes()) == h
    assert Header.parse(b'{"v":1,"kind":"video","lesson":"a","seq":1}').t0 == 0
    with pytest.raises(ValueError, match="t0"):
        Header.parse(b'{"v":1,"kind":"video","lesson":"a","seq":1,"t0":-5}')
    meta = make_meta()
    assert LessonMeta.parse(meta.to_bytes()) == meta
    r = Report("alert", "host:1", "lesson-1", {"code": "x"})
    assert Report.parse(r.to_bytes()) == r
    with pytest.raises(ValueError, match="not JSON"):
        Header.parse(b"\xff\x00")
    with pytest.raises(ValueError, match="kind"):
        Header.parse(b'{"v":1,"kind":"nope","lesson":"a","seq":1}')
    with pytest.raises(ValueError, match="lesson"):
        Header.parse(b'{"v":1,"kind":"video","lesson":"../etc","seq":1}')
    with pytest.raises(ValueError, match="version"):
        Header.parse(b'{"v":9,"kind":"video","lesson":"a","seq":1}')
    with pytest.raises(ValueError, match="metadata"):
        LessonMeta.parse(b'{"lesson_id": 1}')
    assert not r.to_bytes().startswith((b"\x00", b"\x01"))  # never a subscription frame


def test_adts_frames_decode(tmp_path: Path) -> None:
    src = MediaSource()
    src.step(0)
    data = b"".join(p for p, _ in src.step(90000 * 2)[1])
    assert len(data) > 0
    path = tmp_path / "a.aac"
    path.write_bytes(data)
    with av.open(str(path), format="aac") as c:
        s = c.streams.audio[0]
        assert s.codec_context.sample_rate == AUDIO_RATE
        assert sum(f.samples for f in c.decode(s)) >= 1024 * (len(data) // 2000)
    with pytest.raises(ValueError):
        adts_header(10, sample_rate=12345)


# -- segments, crash, finalise --------------------------------------------------------------------
def test_segments_play_alone_and_finalise(tmp_path: Path) -> None:
    rec = LessonRecording(tmp_path, make_meta(), segment_s=2.0)
    src = MediaSource()
    end = feed(rec, src, 900_000, int(FPS * 7))  # 7 s
    rec.close("lesson_ended", ended_ms=None)
    segs = rec.journal.segments
    assert len(segs) == 4  # keyframes every 2 s: 2 + 2 + 2 + 1
    for s in segs:
        assert s.duration_s <= 2.0 + 1e-6
        frames, samples = decode_count(rec.dir / s.file)  # each plays alone
        assert frames == s.video_packets
        assert samples > 0
    assert Journal.load(rec.journal_path).segments == segs
    playlist = (rec.dir / "index.m3u8").read_text()
    assert playlist.count("#EXTINF") == 4 and "#EXT-X-ENDLIST" in playlist

    progress: list[tuple[str, float]] = []
    result = asyncio.run(finalize_lesson(rec.dir, rec.meta,
                                         lambda st, p: progress.append((st, p))))
    info = probe(result.mp4)
    kinds = {s["type"]: s for s in info["streams"]}
    assert kinds["video"]["codec"] == "h264" and kinds["audio"]["codec"] == "aac"
    assert abs(info["duration_s"] - (end - 900_000) / 90000) < 0.2
    head = result.mp4.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096)
    assert progress[-1] == ("finalising", 100.0)
    meta = json.loads(result.metadata.read_text())
    assert meta["teacher"] == "王老师" and meta["gaps"] == []
    assert [s["file"] for s in meta["segments"]] == [s.file for s in segs]
    assert meta["checksums"]["sha256"]["lesson.mp4"] == result.sha256["lesson.mp4"]
    assert {s["id"] for s in meta["schools"]} == {"s1", "s2"}
    assert result.poster is not None and result.poster.read_bytes()[:2] == b"\xff\xd8"


def test_crash_salvages_open_segment_and_records_gap(tmp_path: Path) -> None:
    meta = make_meta()
    rec = LessonRecording(tmp_path, meta, segment_s=2.0)
    src = MediaSource()
    pts = feed(rec, src, 0, int(FPS * 3))  # one finished segment + 1 s open
    assert len(rec.journal.segments) == 1
    part = next((rec.seg_dir).glob("*.part"))
    rec._writer._out.close()  # type: ignore[union-attr]  # what the OS had when killed
    with part.open("ab") as fh:  # a kill mid-write leaves a partial TS packet
        fh.write(b"\x47\x01\x02")
    # A new process: salvages the cut-off part, then resumes after a 1.5 s outage.
    rec2 = LessonRecording(tmp_path, meta, segment_s=2.0)
    assert [s.salvaged for s in rec2.journal.segments] == [False, True]
    assert not list(rec2.seg_dir.glob("*.part"))
    salvaged = rec2.journal.segments[1]
    assert decode_count(rec2.dir / salvaged.file)[0] >= 10
    feed(rec2, MediaSource(), pts + 90000 * 3 // 2, int(FPS * 2))  # starts with an IDR
    rec2.close("lesson_ended")
    assert len(rec2.journal.gaps) == 1
    gap = rec2.journal.gaps[0]
    assert gap.reason == "recorder_restart"
    assert 1.4 < gap.duration_s < 1.7
    result = asyncio.run(finalize_lesson(rec2.dir, meta, lambda st, p: None))
    md = json.loads(result.metadata.read_text())
    assert len(md["gaps"]) == 1 and md["gaps"][0]["reason"] == "recorder_restart"
    # The gap stays a gap in time: the MP4 spans the whole lesson.
    assert abs(md["video_duration_s"] - (3 + 1.5 + 2)) < 0.3


Message = tuple[str, bytes, int, bool]
"""(kind, payload, pts, key) as the recorder service hands them on."""


def capture(src: MediaSource, start_pts: int, frames: int) -> list[Message]:
    """What the mixer would publish for ``frames`` frames (in publishing order)."""
    out: list[Message] = []
    pts = start_pts
    for _ in range(frames):
        video, audio = src.step(pts)
        out += [("audio", payload, apts, False) for payload, apts in audio]
        out += [("video", payload, vpts, key) for payload, vpts, key in video]
        pts += FRAME_TICKS
    return out


def play(rec: LessonRecording, messages: list[Message]) -> None:
    for kind, payload, pts, key in messages:
        if kind == "video":
            rec.video(payload, pts, key)
        else:
            rec.audio(payload, pts)


def crash(rec: LessonRecording) -> None:
    """Leave the open segment as a kill -9 would (flushed by the OS, cut mid-packet)."""
    part = next(rec.seg_dir.glob("*.part"))
    rec._writer._out.close()  # type: ignore[union-attr]
    with part.open("ab") as fh:
        fh.write(b"\x47\x01\x02")


def test_replay_records_the_salvaged_segment_again_whole(tmp_path: Path) -> None:
    """Recorder killed 1 s into a segment; the mixer replays its last seconds from a
    keyframe: the cut-off segment is recorded again in full and nothing is lost."""
    meta = make_meta()
    src = MediaSource()
    before = capture(src, 0, int(FPS * 3))  # segment 0 finished, segment 1 open for 1 s
    outage = capture(src, 3 * 90000, int(FPS * 1.5))  # published while the recorder is down
    after = capture(src, int(4.5 * 90000), int(FPS * 2.5))
    rec = LessonRecording(tmp_path, meta, segment_s=2.0)
    play(rec, before)
    crash(rec)
    rec2 = LessonRecording(tmp_path, meta, segment_s=2.0)
    assert [s.salvaged for s in rec2.journal.segments] == [False, True]
    salvaged = rec2.journal.segments[1]
    # The replay: the publisher's recent messages from its oldest keyframe (t = 0 s here).
    play(rec2, before + outage + after)
    rec2.close("lesson_ended")
    assert rec2.journal.gaps == []
    assert salvaged.index not in [s.index for s in rec2.journal.segments]
    assert not (rec2.dir / salvaged.file).exists()
    reloaded = Journal.load(rec2.journal_path)
    assert [s.index for s in reloaded.segments] == [s.index for s in rec2.journal.segments]
    starts = [s.start_pts for s in reloaded.segments]
    assert starts == sorted(starts) and starts[1] == salvaged.start_pts
    for a, b in itertools.pairwise(reloaded.segments):
        assert b.start_pts == a.end_pts  # back to back: no hole
    result = asyncio.run(finalize_lesson(rec2.dir, rec2.meta, lambda st, p: None))
    md = json.loads(result.metadata.read_text())
    assert md["gaps"] == [] and not any(s["salvaged"] for s in md["segments"])
    frames, _ = decode_count(result.mp4)
    assert frames == int(FPS * 3) + int(FPS * 1.5) + int(FPS * 2.5)  # every frame, once


def test_replay_after_an_unusable_part_with_uneven_frame_times(tmp_path: Path) -> None:
    """The mixer stamps frames by its clock, so a keyframe may come sooner than one nominal
    frame after the last recorded packet; the cut-off part was too short to salvage. The
    replay must still start at that keyframe: no gap, every frame once."""
    meta = make_meta()
    src = MediaSource()
    messages: list[Message] = []
    pts = 0
    for i in range(int(FPS * 6)):
        messages += capture(src, pts, 1)
        pts += 4500 if i % 2 else 7500  # 15 fps on average, uneven
    rec = LessonRecording(tmp_path, meta, segment_s=2.0)
    cut = next(i for i, m in enumerate(messages) if m[0] == "video" and m[2] > 2 * 90000
               and m[3]) + 1  # the kill comes right after the second segment's keyframe
    play(rec, messages[:cut])
    part = next(rec.seg_dir.glob("*.part"))
    rec._writer._out.close()  # type: ignore[union-attr]
    part.unlink()  # nothing usable was on disk
    rec2 = LessonRecording(tmp_path, meta, segment_s=2.0)
    assert len(rec2.journal.segments) == len(rec.journal.segments) >= 1
    play(rec2, messages)  # the replay from the oldest keyframe, then live
    rec2.close("lesson_ended")
    assert rec2.journal.gaps == []
    for a, b in itertools.pairwise(rec2.journal.segments):
        assert b.start_pts <= a.end_pts  # back to back
    result = asyncio.run(finalize_lesson(rec2.dir, rec2.meta, lambda st, p: None))
    assert decode_count(result.mp4)[0] == int(FPS * 6)


def test_mixer_restart_continues_on_the_lessons_clock(tmp_path: Path) -> None:
    """A restarted mixer counts pts and seq from 0 on a new clock (t0 5 s later): the
    recording continues after the old segments, with the time between as a gap."""
    meta = make_meta()
    rec = LessonRecording(tmp_path, meta, segment_s=2.0)
    for seq in range(5):
        rec.note_seq(seq)
    feed(rec, MediaSource(), 0, int(FPS * 3))
    restarted = dataclasses.replace(meta, t0_epoch_ms=meta.t0_epoch_ms + 5000.0)
    assert rec.rebase(meta) is False  # same clock: nothing to do
    rec.update_meta(restarted)
    assert rec.clock == int(restarted.t0_epoch_ms) and rec.last_seq is None
    rec.note_seq(0)  # seq starts again: not a duplicate
    feed(rec, MediaSource(), 0, int(FPS * 3))
    rec.close("lesson_ended")
    assert [g.reason for g in rec.journal.gaps] == ["mixer_restart"]
    assert abs(rec.journal.gaps[0].duration_s - 2.0) < 0.1  # 3 s recorded, back at 5 s
    assert rec.journal.segments[-1].start_pts >= 5 * 90000
    saved = LessonMeta.parse((rec.dir / "meta.json").read_bytes())
    assert saved.t0_epoch_ms == meta.t0_epoch_ms  # the lesson's origin stays
    # A recorder restarted now resumes on the lesson's origin and the current clock.
    rec2 = LessonRecording(tmp_path, restarted, segment_s=2.0)
    assert rec2.base_t0_ms == meta.t0_epoch_ms and rec2.video_offset == 5 * 90000
    result = asyncio.run(finalize_lesson(rec.dir, rec.meta, lambda st, p: None))
    md = json.loads(result.metadata.read_text())
    assert [g["reason"] for g in md["gaps"]] == ["mixer_restart"]
    assert abs(md["video_duration_s"] - 8.0) < 0.3
    assert md["start_ms"] == meta.started_ms


def test_mixer_jumps_are_not_gaps(tmp_path: Path) -> None:
    """Composition pausing under load (pts jump, no lost message) is not a gap."""
    rec = LessonRecording(tmp_path, make_meta(), segment_s=2.0)
    src = MediaSource()
    for seq in range(3):
        rec.note_seq(seq)
    pts = feed(rec, src, 0, 20)
    rec.note_seq(3)
    feed(rec, src, pts + 90000, 20)
    assert rec.journal.gaps == []
    rec.note_seq(10)  # 6 messages lost
    feed(rec, src, pts + 90000 * 4, 5)
    assert [g.reason for g in rec.journal.gaps] == ["lost_packets"]
    assert rec.lost_messages == 6


def test_finalise_without_segments_is_a_clear_error(tmp_path: Path) -> None:
    rec = LessonRecording(tmp_path, make_meta(), segment_s=2.0)
    rec.close("lesson_ended")
    with pytest.raises(RecordingError, match="no segment"):
        asyncio.run(finalize_lesson(rec.dir, rec.meta, lambda st, p: None))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    # The suite runs as root (CI too); a full-disk test without a small disk proves nothing.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_a_clear_error_and_recording_recovers(small_disk: Path) -> None:
    rec = LessonRecording(small_disk, make_meta(), segment_s=2.0)
    src = MediaSource()
    pts = 0
    with pytest.raises(DiskError, match="No space left"):
        for _ in range(2000):
            pts = feed(rec, src, pts, 1)
    assert not list(rec.seg_dir.glob("*.part"))  # the failed segment freed its space
    kept = [rec.dir / s.file for s in rec.journal.segments]
    for path in kept:
        assert decode_count(path)[0] > 0
    # Space comes back (an operator deletes something): recording goes on after a gap.
    for path in kept:
        path.unlink()
    feed(rec, MediaSource(), pts + 90000, int(FPS * 2.5))
    assert rec.journal.gaps and rec.journal.gaps[-1].reason == "disk_error"


# -- archive --------------------------------------------------------------------------------------
def test_local_archive_copies_and_verifies(tmp_path: Path) -> None:
    (tmp_path / "lesson").mkdir()
    f = tmp_path / "lesson" / "lesson.mp4"
    f.write_bytes(os.urandom(300_000))
    spool = Spool(tmp_path / "spool")
    job = spool.add("l1", [f], {})
    assert [j.lesson_id for j in spool.jobs()] == ["l1"]
    where = LocalArchive(tmp_path / "archive").put(Job.load(job.path),  # type: ignore[arg-type]
                                                   lambda st, p: None)
    assert Path(where["lesson.mp4"]).read_bytes() == f.read_bytes()
    spool.done(job)
    assert spool.jobs() == []
    job = spool.add("l2", [f], {"lesson.mp4": "0" * 64})  # wrong checksum: never accepted
    with pytest.raises(RecordingError, match="checksum"):
        LocalArchive(tmp_path / "archive").put(job, lambda st, p: None)
