"""Turn a lesson's segments into the archive's deliverables.

- ``lesson.mp4``: the segments remuxed (``ffmpeg -c copy``, no re-encode) into one MP4 with
  its index at the front (``+faststart``) for the cloud platform's players.
- ``poster.jpg``: a frame from the middle of the lesson.
- ``metadata.json``: lesson, schools, classrooms, subject, grade, teacher, start, end,
  duration, segments, gaps and SHA-256 checksums.

Progress (0-100 %) is reported through a callback while the MP4 is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2

from syncclass.errors import RecordingError
from syncclass.private_files import make_private, write_private
from syncclass.protocol import dumps_strict
from syncclass.recorder_wire import LessonMeta

from .segments import VIDEO_RATE, Journal, sha256_file

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
"""``progress(stage, percent)``."""


@dataclass
class FinalizedLesson:
    lesson_id: str
    dir: Path
    mp4: Path
    metadata: Path
    poster: Path | None
    duration_s: float
    sha256: dict[str, str]
    """SHA-256 by file name (lesson.mp4, metadata.json, poster.jpg)."""

    def files(self) -> list[Path]:
        return [p for p in (self.mp4, self.poster, self.metadata) if p is not None]


def _iso(epoch_ms: float | None) -> str | None:
    if epoch_ms is None:
        return None
    return dt.datetime.fromtimestamp(epoch_ms / 1000).astimezone().isoformat(
        timespec="milliseconds")


async def remux_to_mp4(segments: list[Path], out: Path, progress: Progress) -> None:
    """Concatenate TS segments into a faststart MP4 with ffmpeg (stream copy)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RecordingError("ffmpeg is not installed (scripts/bootstrap.sh installs it)")
    total = sum(p.stat().st_size for p in segments) or 1
    part = out.with_name(out.name + ".part")
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "mpegts", "-i", "pipe:0",
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-bsf:a", "aac_adtstoasc",
        "-movflags", "+faststart", "-f", "mp4", str(part),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    sent = 0
    last_pct = -10.0
    try:
        for seg in segments:
            with seg.open("rb") as fh:
                while block := await asyncio.to_thread(fh.read, 1 << 20):
                    proc.stdin.write(block)
                    await proc.stdin.drain()
                    sent += len(block)
                    pct = 95.0 * sent / total
                    if pct - last_pct >= 10.0:
                        last_pct = pct
                        progress("finalising", pct)
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # ffmpeg failed; its stderr says why
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    finally:
        rc = await proc.wait()
        err = (await stderr_task).decode(errors="replace").strip()
    if rc != 0:
        with contextlib.suppress(OSError):
            part.unlink()
        raise RecordingError(f"ffmpeg could not write {out} (exit {rc}): {err[-500:]}")
    make_private(part)  # ffmpeg creates it by the umask
    os.replace(part, out)
    progress("finalising", 100.0)


def probe(path: Path) -> dict[str, Any]:
    """Streams and duration of a media file (PyAV), for metadata and checks."""
    with av.open(str(path)) as c:
        streams = []
        for s in c.streams:
            cc: Any = s.codec_context
            entry: dict[str, Any] = {"type": s.type, "codec": cc.name}
            if s.type == "video":
                entry.update(width=cc.width, height=cc.height)
            elif s.type == "audio":
                entry.update(sample_rate=cc.sample_rate, channels=cc.channels)
            streams.append(entry)
        duration = (c.duration or 0) / av.time_base
    return {"duration_s": round(duration, 3), "streams": streams}


def write_poster(video: Path, out: Path, at_s: float) -> None:
    """Decode the first frame at or after ``at_s`` seconds and write it as JPEG."""
    with av.open(str(video)) as c:
        stream = c.streams.video[0]
        if at_s > 0 and stream.time_base is not None:
            c.seek(int(at_s / stream.time_base), stream=stream, backward=True)
        for frame in c.decode(stream):
            image = frame.to_ndarray(format="bgr24")
            break
        else:
            raise RecordingError(f"{video}: no video frame to make a poster from")
    if not cv2.imwrite(str(out), image, [cv2.IMWRITE_JPEG_QUALITY, 85]):
        raise RecordingError(f"cannot write poster {out}")
    make_private(out)  # OpenCV creates it by the umask


async def finalize_lesson(lesson_dir: Path, meta: LessonMeta, progress: Progress,
                          recorder: str = "") -> FinalizedLesson:
    """Build lesson.mp4, poster.jpg and metadata.json from the journal's segments."""
    journal = Journal.load(lesson_dir / "journal.jsonl")
    segs = sorted((s for s in journal.segments if (lesson_dir / s.file).exists()),
                  key=lambda s: s.index)
    if not segs:
        raise RecordingError(f"lesson {meta.lesson_id}: no segment was recorded")
    mp4 = lesson_dir / "lesson.mp4"
    progress("finalising", 0.0)
    await remux_to_mp4([lesson_dir / s.file for s in segs], mp4, progress)
    info = await asyncio.to_thread(probe, mp4)
    poster_path = lesson_dir / "poster.jpg"
    poster: Path | None = poster_path
    try:
        await asyncio.to_thread(write_poster, mp4, poster_path, info["duration_s"] / 2)
    except (RecordingError, av.error.FFmpegError, OSError) as exc:
        logger.warning("lesson %s: no poster: %s", meta.lesson_id, exc)
        poster = None
    first_pts, last_pts = segs[0].start_pts, max(s.end_pts for s in segs)

    def epoch(pts: int) -> float:
        return meta.t0_epoch_ms + pts * 1000 / VIDEO_RATE

    checksums = {"lesson.mp4": await asyncio.to_thread(sha256_file, mp4)}
    if poster is not None:
        checksums["poster.jpg"] = await asyncio.to_thread(sha256_file, poster)
    schools: dict[str, dict[str, Any]] = {}
    for room in meta.classrooms:
        school = schools.setdefault(room.school_id, {"id": room.school_id,
                                                     "name": room.school_name,
                                                     "classrooms": []})
        school["classrooms"].append(room.id)
    start_ms = meta.started_ms if meta.started_ms is not None else epoch(first_pts)
    ended_ms = (journal.end or {}).get("ended_ms")
    end_ms = float(ended_ms) if ended_ms else epoch(last_pts)
    metadata = {
        "lesson_id": meta.lesson_id,
        "county": meta.county,
        "pairing_id": meta.pairing_id,
        "timetable_id": meta.timetable_id,
        "subject": meta.subject,
        "grade": meta.grade,
        "teacher": meta.teacher,
        "schools": list(schools.values()),
        "classrooms": [
            {"id": r.id, "name": r.name, "role": r.role, "school_id": r.school_id}
            for r in meta.classrooms
        ],
        "start": _iso(start_ms),
        "end": _iso(end_ms),
        "start_ms": round(start_ms),
        "end_ms": round(end_ms),
        "duration_s": round((end_ms - start_ms) / 1000, 3),
        "recorded_from": _iso(epoch(first_pts)),
        "recorded_from_ms": round(epoch(first_pts)),
        "video_duration_s": info["duration_s"],
        "view": meta.view,
        "streams": info["streams"],
        "ended": (journal.end or {}).get("reason", "unknown"),
        "segments": [
            {"index": s.index, "file": s.file, "start_s": round((s.start_pts - first_pts)
                                                                  / VIDEO_RATE, 3),
             "duration_s": round(s.duration_s, 3), "bytes": s.bytes, "sha256": s.sha256,
             "salvaged": s.salvaged}
            for s in segs
        ],
        "gaps": [
            {"start_s": round((g.start_pts - first_pts) / VIDEO_RATE, 3),
             "duration_s": round(g.duration_s, 3), "start": _iso(epoch(g.start_pts)),
             "end": _iso(epoch(g.end_pts)), "reason": g.reason}
            for g in journal.gaps
        ],
        "errors": journal.errors,
        "checksums": {"sha256": checksums},
        "recorder": recorder,
        "finalised": _iso(dt.datetime.now().timestamp() * 1000),
    }
    meta_path = lesson_dir / "metadata.json"
    tmp = meta_path.with_name("metadata.json.tmp")
    write_private(tmp, dumps_strict(metadata, ensure_ascii=False, indent=2))
    os.replace(tmp, meta_path)
    checksums["metadata.json"] = await asyncio.to_thread(sha256_file, meta_path)
    return FinalizedLesson(meta.lesson_id, lesson_dir, mp4, meta_path, poster,
                           info["duration_s"], checksums)
