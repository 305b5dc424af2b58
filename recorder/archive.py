"""Archive finished lessons: a local folder (default) or S3-compatible object storage.

A finished lesson becomes a *job* in the spool (``recorder.spool_dir``): a small JSON file
naming its files and their SHA-256. The :class:`Uploader` works the spool until the target
has every file with the right checksum, retrying with exponential backoff while the target
is down; jobs survive restarts (a restarted recorder resumes them, and an S3 multipart
upload resumes from the parts the server already has). The files themselves stay in the
recorder's lesson folder, so nothing is lost while the target is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from syncclass.config import RecorderConfig, S3ArchiveConfig, is_lesson_id
from syncclass.errors import RecordingError
from syncclass.private_files import create_private, private_dir, write_private
from syncclass.protocol import dumps_strict

from .segments import sha256_file

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass
class SpoolFile:
    name: str
    """Name in the archive (``lesson.mp4``)."""
    path: str
    """Absolute path of the local copy."""
    sha256: str
    size: int


@dataclass
class Job:
    lesson_id: str
    files: list[SpoolFile]
    created_ms: int
    attempts: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    """Target-specific resumable state (S3: upload ids and finished parts per file)."""
    path: Path | None = None

    def save(self) -> None:
        assert self.path is not None
        data = asdict(self)
        data.pop("path")
        tmp = self.path.with_name(self.path.name + ".tmp")
        write_private(tmp, dumps_strict(data, ensure_ascii=False, indent=1))
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> Job:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = [SpoolFile(**f) for f in data.pop("files")]
        job = cls(files=files, path=path, **data)
        if not is_lesson_id(job.lesson_id):  # it names the archive folder or object key
            raise ValueError(f"lesson_id {str(job.lesson_id)[:80]!r} is not a lesson id")
        return job


class Spool:
    """Pending archive jobs, one JSON file each, oldest first."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, lesson_id: str, files: list[Path], sha256: dict[str, str]) -> Job:
        if not is_lesson_id(lesson_id):
            raise ValueError(f"lesson id {lesson_id[:80]!r} is not a lesson id")
        private_dir(self.root)
        job = Job(
            lesson_id=lesson_id,
            files=[SpoolFile(p.name, str(p.resolve()), sha256.get(p.name) or sha256_file(p),
                             p.stat().st_size) for p in files],
            created_ms=int(time.time() * 1000),
            path=self.root / f"{lesson_id}.job.json",
        )
        job.save()
        return job

    def jobs(self) -> list[Job]:
        if not self.root.exists():
            return []
        out = []
        for p in sorted(self.root.glob("*.job.json"), key=lambda p: p.stat().st_mtime):
            try:
                out.append(Job.load(p))
            except (OSError, ValueError, TypeError) as exc:
                logger.error("spool job %s is unreadable (left in place): %s", p, exc)
        return out

    def done(self, job: Job) -> None:
        if job.path is not None:
            with contextlib.suppress(FileNotFoundError):
                job.path.unlink()


class ArchiveTarget(Protocol):
    def describe(self) -> str: ...

    def put(self, job: Job, progress: Progress) -> dict[str, str]:
        """Store every file of ``job`` and verify it; returns location by file name.
        Blocking (runs in a worker thread). Raises on any failure (the job is retried)."""
        ...


class LocalArchive:
    """Copies files to ``<archive_dir>/<lesson_id>/`` (temp name, fsync, rename, verify)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"folder {self.root}"

    def put(self, job: Job, progress: Progress) -> dict[str, str]:
        if not is_lesson_id(job.lesson_id):
            raise RecordingError(f"lesson id {job.lesson_id[:80]!r} is not a lesson id")
        dest_dir = private_dir(self.root / job.lesson_id, own=True)  # owner only
        total = sum(f.size for f in job.files) or 1
        done = 0
        out = {}
        for f in job.files:
            dest = dest_dir / f.name
            if not (dest.exists() and dest.stat().st_size == f.size
                    and sha256_file(dest) == f.sha256):
                tmp = dest.with_name(dest.name + ".part")
                create_private(tmp)
                with open(f.path, "rb") as src, tmp.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
                if sha256_file(tmp) != f.sha256:
                    tmp.unlink()
                    raise RecordingError(f"checksum mismatch copying {f.path} to {dest}")
                os.replace(tmp, dest)
            done += f.size
            progress("archiving", 100.0 * done / total)
            out[f.name] = str(dest)
        return out


class S3Archive:
    """Multipart upload to an S3-compatible store, resumable, verified by SHA-256."""

    def __init__(self, cfg: S3ArchiveConfig) -> None:
        import boto3
        from botocore.config import Config

        self.cfg = cfg
        self.part_size = cfg.part_size_mb * 1024 * 1024
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            region_name=cfg.region,
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=cfg.secret_access_key,
            config=Config(
                connect_timeout=cfg.timeout_s, read_timeout=cfg.timeout_s,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        self._bucket_checked = False

    def describe(self) -> str:
        return f"s3://{self.cfg.bucket}/{self.cfg.prefix} at {self.cfg.endpoint_url or 'AWS'}"

    def key(self, job: Job, f: SpoolFile) -> str:
        return f"{self.cfg.prefix}{job.lesson_id}/{f.name}"

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.cfg.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code not in ("404", "NoSuchBucket") or not self.cfg.create_bucket:
                raise
            self.client.create_bucket(Bucket=self.cfg.bucket)
            logger.info("created bucket %s", self.cfg.bucket)
        self._bucket_checked = True

    def put(self, job: Job, progress: Progress) -> dict[str, str]:
        self._ensure_bucket()
        total = sum(f.size for f in job.files) or 1
        base = 0
        out = {}
        for f in job.files:
            key = self.key(job, f)
            done_files = job.state.setdefault("done", [])
            if f.name not in done_files:
                if f.size >= self.part_size:
                    def part_done(n: int, b: int = base) -> None:
                        progress("uploading", 100.0 * (b + n) / total)

                    self._multipart(job, f, key, part_done)
                else:
                    with open(f.path, "rb") as fh:
                        self.client.put_object(Bucket=self.cfg.bucket, Key=key, Body=fh,
                                               Metadata={"sha256": f.sha256})
                self._verify(key, f)
                done_files.append(f.name)
                job.save()
            base += f.size
            progress("uploading", 100.0 * base / total)
            out[f.name] = f"s3://{self.cfg.bucket}/{key}"
        return out

    def _multipart(self, job: Job, f: SpoolFile, key: str, progress: Callable[[int], None]
                   ) -> None:
        from botocore.exceptions import ClientError

        uploads = job.state.setdefault("uploads", {})
        upload_id = uploads.get(f.name)
        have: dict[int, str] = {}
        if upload_id:
            try:  # resume: the parts the server already has
                resp = self.client.list_parts(Bucket=self.cfg.bucket, Key=key,
                                              UploadId=upload_id)
                have = {p["PartNumber"]: p["ETag"] for p in resp.get("Parts", [])}
            except ClientError:
                upload_id = None  # expired or the server forgot it: start over
        if not upload_id:
            upload_id = self.client.create_multipart_upload(
                Bucket=self.cfg.bucket, Key=key, Metadata={"sha256": f.sha256})["UploadId"]
            uploads[f.name] = upload_id
            job.save()
        elif have:
            logger.info("lesson %s: resuming upload of %s (%d part(s) already stored)",
                        job.lesson_id, f.name, len(have))
        n_parts = max(1, -(-f.size // self.part_size))
        with open(f.path, "rb") as fh:
            for number in range(1, n_parts + 1):
                if number in have:
                    continue
                fh.seek((number - 1) * self.part_size)
                body = fh.read(self.part_size)
                resp = self.client.upload_part(Bucket=self.cfg.bucket, Key=key,
                                               UploadId=upload_id, PartNumber=number,
                                               Body=body)
                have[number] = resp["ETag"]
                progress(min(f.size, number * self.part_size))
        self.client.complete_multipart_upload(
            Bucket=self.cfg.bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": have[n]}
                                       for n in sorted(have)]},
        )
        uploads.pop(f.name, None)

    def _verify(self, key: str, f: SpoolFile) -> None:
        """Read the object back and compare its SHA-256 with the local file's."""
        obj = self.client.get_object(Bucket=self.cfg.bucket, Key=key)
        h = hashlib.sha256()
        size = 0
        for chunk in obj["Body"].iter_chunks(1 << 20):
            h.update(chunk)
            size += len(chunk)
        if size != f.size or h.hexdigest() != f.sha256:
            with contextlib.suppress(Exception):
                self.client.delete_object(Bucket=self.cfg.bucket, Key=key)
            raise RecordingError(f"s3 object {key}: checksum mismatch after upload "
                                 f"({size} bytes, expected {f.size}); will upload again")


def make_target(cfg: RecorderConfig) -> ArchiveTarget:
    if cfg.archive == "s3":
        assert cfg.s3 is not None  # validated in RecorderConfig
        return S3Archive(cfg.s3)
    return LocalArchive(Path(cfg.archive_dir))


class Uploader:
    """Works the spool: ``start()`` then ``aclose()``; :meth:`wake` after adding a job.

    ``on_done(job, locations)`` is called on the event loop when a job is archived;
    ``on_progress(lesson_id, stage, percent)`` during uploads (from a worker thread)."""

    def __init__(self, spool: Spool, target: ArchiveTarget, retry_max_s: float,
                 on_done: Callable[[Job, dict[str, str]], None],
                 on_progress: Callable[[str, str, float], None],
                 on_failure: Callable[[Job, str], None] | None = None) -> None:
        self.spool = spool
        self.target = target
        self.retry_max_s = retry_max_s
        self._on_done = on_done
        self._on_progress = on_progress
        self._on_failure = on_failure
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.uploaded = 0
        self.failures = 0
        self._attempts: dict[str, int] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="uploader")

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 1.0
        while True:
            self._wake.clear()
            failed = False
            for job in self.spool.jobs():
                try:
                    where = await asyncio.to_thread(
                        self.target.put, job,
                        functools.partial(self._on_progress, job.lesson_id),
                    )
                except Exception as exc:  # network, server, disk: retry the whole job later
                    failed = True
                    self.failures += 1
                    job.attempts = max(job.attempts, self._attempts.get(job.lesson_id, 0)) + 1
                    self._attempts[job.lesson_id] = job.attempts
                    with contextlib.suppress(OSError):  # the spool's disk may be full too
                        job.save()
                    msg = (f"archive to {self.target.describe()} failed "
                           f"({type(exc).__name__}: {exc})")
                    logger.warning("lesson %s: %s; retry in %.0f s (attempt %d)",
                                   job.lesson_id, msg, delay, job.attempts)
                    if self._on_failure is not None and job.attempts in (1, 5, 20):
                        self._on_failure(job, msg)
                    break  # keep order: oldest first
                self.uploaded += 1
                self.spool.done(job)
                delay = 1.0
                logger.info("lesson %s: archived to %s", job.lesson_id, self.target.describe())
                self._on_done(job, where)
            if failed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for (3.11 bug)
                        await self._wake.wait()
                delay = min(self.retry_max_s, delay * 2)
            else:
                await self._wake.wait()
