"""Observers' comments (评课 notes), stored with their lesson.

One JSON object per line in ``<data_dir>/lessons/<lesson_id>/comments.jsonl`` (a
:class:`~syncclass.protocol.CommentRecord`). Appends are whole lines, flushed and fsynced,
so a crash loses at most the line being written; :meth:`CommentStore.read` skips a torn
last line instead of failing. Disk writes run in a worker thread: the event loop never
waits on the disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path

from pydantic import ValidationError

from syncclass.private_files import FILE_MODE, private_dir
from syncclass.protocol import CommentRecord

logger = logging.getLogger(__name__)

_LESSON_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_lesson_id(lesson_id: str) -> str:
    """``lesson_id`` if it is safe as a directory name; ``ValueError`` otherwise."""
    if not _LESSON_ID_RE.match(lesson_id) or ".." in lesson_id:
        raise ValueError(f"invalid lesson id {lesson_id[:80]!r}")
    return lesson_id


class CommentStore:
    """Append-only comment files, one per lesson."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "lessons"
        self._lock = asyncio.Lock()
        self._seq: dict[str, int] = {}

    def path(self, lesson_id: str) -> Path:
        return self.root / check_lesson_id(lesson_id) / "comments.jsonl"

    def read(self, lesson_id: str) -> list[CommentRecord] | None:
        """The lesson's comments in order; ``None`` if it has no comment file."""
        path = self.path(lesson_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        out: list[CommentRecord] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(CommentRecord.model_validate(json.loads(line)))
            except (ValueError, ValidationError):
                logger.warning("%s:%d: skipping unreadable comment line", path, n)
        return out

    async def add(self, record_fields: dict[str, object]) -> CommentRecord:
        """Number, store and return a comment (``seq`` is assigned here)."""
        lesson_id = str(record_fields["lesson_id"])
        async with self._lock:
            seq = self._seq.get(lesson_id)
            if seq is None:
                existing = await asyncio.to_thread(self.read, lesson_id)
                seq = max((c.seq for c in existing or []), default=0)
            record = CommentRecord.model_validate({**record_fields, "seq": seq + 1})
            await asyncio.to_thread(self._append, self.path(lesson_id), record)
            self._seq[lesson_id] = seq + 1
        return record

    @staticmethod
    def _append(path: Path, record: CommentRecord) -> None:
        private_dir(path.parent, own=True)  # minors' data: owner only (0700 / 0600)
        line = record.model_dump_json() + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
