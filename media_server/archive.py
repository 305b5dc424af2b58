"""Finished lessons for replay: the recorder's archive (a local folder or S3-compatible
storage), and the media server's own state beside it (publication, replay comments,
deletions) in SQLite.

Each archived lesson is ``<lesson_id>/`` with ``lesson.mp4``, ``metadata.json``,
``poster.jpg`` (written by :mod:`recorder.finalize`) and, on a local archive, the lesson
report the mixer copies beside the recording. The lesson's report and live comments are
also read from the mixer's data folder (``reports/<id>/report.json``,
``lessons/<id>/comments.jsonl``), the same files the mixer serves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from syncclass.config import S3ArchiveConfig
from syncclass.protocol import CommentRecord

logger = logging.getLogger(__name__)

S3_LIST_TTL_S = 30.0
"""An S3 archive's lesson list is listed again at most this often (seconds)."""


def recorded_from_ms(meta: dict[str, Any]) -> int:
    """Epoch ms of the video's time 0 (its first frame)."""
    if isinstance(meta.get("recorded_from_ms"), int | float):
        return int(meta["recorded_from_ms"])
    iso = meta.get("recorded_from")
    if isinstance(iso, str):
        with contextlib.suppress(ValueError):
            return round(dt.datetime.fromisoformat(iso).timestamp() * 1000)
    return int(meta.get("start_ms") or 0)


class ArchiveSource(Protocol):
    def describe(self) -> str: ...

    def lessons(self) -> list[dict[str, Any]]:
        """Every archived lesson's metadata (blocking)."""
        ...

    def metadata(self, lesson_id: str) -> dict[str, Any] | None: ...

    def local_file(self, lesson_id: str, name: str) -> Path | None:
        """The file on this machine, if the archive is a local folder."""
        ...

    def url(self, lesson_id: str, name: str, expires_s: int, download: bool) -> str | None:
        """A presigned URL for the file, if the archive is object storage."""
        ...

    def read_json(self, lesson_id: str, name: str) -> dict[str, Any] | None: ...

    def delete(self, lesson_id: str) -> None: ...


def _load_json(data: bytes, what: str) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError as exc:
        logger.warning("%s: unreadable: %s", what, exc)
        return None
    return value if isinstance(value, dict) else None


class LocalArchiveSource:
    """``<root>/<lesson_id>/...`` on this machine; metadata cached by file stamp."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    def describe(self) -> str:
        return f"folder {self.root}"

    def metadata(self, lesson_id: str) -> dict[str, Any] | None:
        path = self.root / lesson_id / "metadata.json"
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(lesson_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            meta = _load_json(path.read_bytes(), str(path))
        except OSError:
            return None
        if meta is not None:
            self._cache[lesson_id] = (stamp, meta)
        return meta

    def lessons(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir():
                meta = self.metadata(d.name)
                if meta is not None:
                    out.append(meta)
        return out

    def local_file(self, lesson_id: str, name: str) -> Path | None:
        path = self.root / lesson_id / name
        return path if path.is_file() else None

    def url(self, lesson_id: str, name: str, expires_s: int, download: bool) -> str | None:
        return None

    def read_json(self, lesson_id: str, name: str) -> dict[str, Any] | None:
        path = self.local_file(lesson_id, name)
        if path is None:
            return None
        try:
            return _load_json(path.read_bytes(), str(path))
        except OSError:
            return None

    def delete(self, lesson_id: str) -> None:
        shutil.rmtree(self.root / lesson_id, ignore_errors=True)
        self._cache.pop(lesson_id, None)


class S3ArchiveSource:
    """The recorder's S3 archive (``<prefix><lesson_id>/...``): metadata read once per
    lesson, the video served by presigned URLs (the bucket, or a CDN in front of it,
    carries the bytes; this server only signs)."""

    def __init__(self, cfg: S3ArchiveConfig) -> None:
        import boto3
        from botocore.config import Config

        self.cfg = cfg
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
            aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key,
            config=Config(connect_timeout=cfg.timeout_s, read_timeout=cfg.timeout_s,
                          retries={"max_attempts": 2, "mode": "standard"},
                          s3={"addressing_style": "path"}))
        self._meta: dict[str, dict[str, Any]] = {}
        self._listed_at = 0.0
        self._ids: list[str] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.cfg.bucket}/{self.cfg.prefix} at {self.cfg.endpoint_url or 'AWS'}"

    def _key(self, lesson_id: str, name: str) -> str:
        return f"{self.cfg.prefix}{lesson_id}/{name}"

    def _ids_now(self) -> list[str]:
        with self._lock:
            if time.monotonic() - self._listed_at < S3_LIST_TTL_S:
                return list(self._ids)
        ids = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.cfg.bucket, Prefix=self.cfg.prefix,
                                       Delimiter="/"):
            for p in page.get("CommonPrefixes", []):
                ids.append(p["Prefix"][len(self.cfg.prefix):].rstrip("/"))
        with self._lock:
            self._ids, self._listed_at = sorted(ids), time.monotonic()
        return ids

    def read_json(self, lesson_id: str, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        key = self._key(lesson_id, name)
        try:
            body = self.client.get_object(Bucket=self.cfg.bucket, Key=key)["Body"].read()
        except ClientError:
            return None
        return _load_json(body, f"s3 {key}")

    def metadata(self, lesson_id: str) -> dict[str, Any] | None:
        meta = self._meta.get(lesson_id)
        if meta is None:
            meta = self.read_json(lesson_id, "metadata.json")
            if meta is not None:
                self._meta[lesson_id] = meta
        return meta

    def lessons(self) -> list[dict[str, Any]]:
        out = []
        for lid in self._ids_now():
            meta = self.metadata(lid)
            if meta is not None:
                out.append(meta)
        return out

    def local_file(self, lesson_id: str, name: str) -> Path | None:
        return None

    def url(self, lesson_id: str, name: str, expires_s: int, download: bool) -> str | None:
        params = {"Bucket": self.cfg.bucket, "Key": self._key(lesson_id, name)}
        if download:
            params["ResponseContentDisposition"] = f'attachment; filename="{lesson_id}.mp4"'
        return str(self.client.generate_presigned_url("get_object", Params=params,
                                                      ExpiresIn=expires_s))

    def delete(self, lesson_id: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.cfg.bucket,
                                       Prefix=self._key(lesson_id, "")):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.cfg.bucket, Delete={"Objects": keys})
        self._meta.pop(lesson_id, None)
        with self._lock:
            self._listed_at = 0.0


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS published (
    lesson_id TEXT PRIMARY KEY, by TEXT NOT NULL, at_ms INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS deleted (
    lesson_id TEXT PRIMARY KEY, by TEXT NOT NULL, at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS replay_comments (
    lesson_id TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (lesson_id, seq))""",
)


class ReplayState:
    """The media server's own rows (SQLite, ``media.db``): who published which lesson
    (审核), which were deleted and why, and comments added while replaying."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._db() as db:
            for sql in _SCHEMA:
                db.execute(sql)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = sqlite3.connect(self.path, timeout=10)
            try:
                with db:
                    yield db
            finally:
                db.close()

    def published(self) -> dict[str, dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT lesson_id, by, at_ms FROM published").fetchall()
        return {r[0]: {"by": r[1], "at_ms": r[2]} for r in rows}

    def publish(self, lesson_id: str, by: str, published: bool) -> None:
        with self._db() as db:
            if published:
                db.execute("INSERT OR REPLACE INTO published VALUES (?, ?, ?)",
                           (lesson_id, by, int(time.time() * 1000)))
            else:
                db.execute("DELETE FROM published WHERE lesson_id = ?", (lesson_id,))

    def deleted(self) -> dict[str, dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT lesson_id, by, at_ms, reason FROM deleted").fetchall()
        return {r[0]: {"by": r[1], "at_ms": r[2], "reason": r[3]} for r in rows}

    def mark_deleted(self, lesson_id: str, by: str, reason: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO deleted VALUES (?, ?, ?, ?)",
                       (lesson_id, by, int(time.time() * 1000), reason))
            db.execute("DELETE FROM published WHERE lesson_id = ?", (lesson_id,))
            db.execute("DELETE FROM replay_comments WHERE lesson_id = ?", (lesson_id,))

    def comments(self, lesson_id: str) -> list[CommentRecord]:
        with self._db() as db:
            rows = db.execute("SELECT record FROM replay_comments WHERE lesson_id = ? "
                              "ORDER BY seq", (lesson_id,)).fetchall()
        out = []
        for (text,) in rows:
            with contextlib.suppress(ValueError, ValidationError):
                out.append(CommentRecord.model_validate_json(text))
        return out

    def add_comment(self, fields: dict[str, Any]) -> CommentRecord:
        lesson_id = str(fields["lesson_id"])
        with self._db() as db:
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM replay_comments "
                                "WHERE lesson_id = ?", (lesson_id,)).fetchone()
            record = CommentRecord.model_validate({**fields, "seq": seq})
            db.execute("INSERT INTO replay_comments VALUES (?, ?, ?)",
                       (lesson_id, seq, record.model_dump_json()))
        return record


def read_live_comments(mixer_data_dir: Path, lesson_id: str) -> list[CommentRecord]:
    """The comments observers wrote while the lesson was live (the mixer's file)."""
    path = mixer_data_dir / "lessons" / lesson_id / "comments.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        if line.strip():
            with contextlib.suppress(ValueError, ValidationError):
                out.append(CommentRecord.model_validate(json.loads(line)))
    return out
