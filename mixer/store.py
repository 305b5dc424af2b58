"""Lesson report rows in SQL: SQLite by default, PostgreSQL when configured.

The DDL below is plain SQL that both engines accept unchanged (``TEXT``, ``BIGINT``,
``DOUBLE PRECISION``, ``INTEGER``, composite primary keys, ``CREATE ... IF NOT EXISTS``;
no AUTOINCREMENT/SERIAL, no engine-specific types). Statements use ``?`` placeholders for
``sqlite3``; :func:`_pg` rewrites them to ``%s`` for a DB-API PostgreSQL driver (psycopg),
which is imported only when a ``postgresql://`` URL is configured.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from syncclass.errors import ConfigError
from syncclass.private_files import create_private, private_dir
from syncclass.redact import redact_url

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS lessons (
    lesson_id TEXT PRIMARY KEY,
    pairing_id TEXT NOT NULL,
    main_classroom TEXT NOT NULL,
    main_school TEXT NOT NULL,
    subject TEXT NOT NULL,
    grade TEXT NOT NULL,
    teacher TEXT NOT NULL,
    timetable_id TEXT,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT NOT NULL,
    duration_s DOUBLE PRECISION NOT NULL,
    st_rt DOUBLE PRECISION,
    st_ch DOUBLE PRECISION,
    lesson_type TEXT,
    exchanges INTEGER NOT NULL,
    report_version INTEGER NOT NULL,
    report_path TEXT
)""",
    """CREATE TABLE IF NOT EXISTS lesson_classrooms (
    lesson_id TEXT NOT NULL,
    classroom_id TEXT NOT NULL,
    school_id TEXT NOT NULL,
    role TEXT NOT NULL,
    present_s DOUBLE PRECISION NOT NULL,
    late_s DOUBLE PRECISION NOT NULL,
    early_leave_s DOUBLE PRECISION NOT NULL,
    attendance_ratio DOUBLE PRECISION NOT NULL,
    reconnects INTEGER NOT NULL,
    talk_s DOUBLE PRECISION NOT NULL,
    turns INTEGER NOT NULL,
    hand_raises INTEGER NOT NULL,
    head_count_median DOUBLE PRECISION,
    head_count_max INTEGER,
    rtt_ms DOUBLE PRECISION,
    loss_percent DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    PRIMARY KEY (lesson_id, classroom_id)
)""",
    "CREATE INDEX IF NOT EXISTS lessons_started ON lessons (started_ms)",
]
LESSON_COLUMNS = ("lesson_id", "pairing_id", "main_classroom", "main_school", "subject", "grade",
                  "teacher", "timetable_id", "started_ms", "ended_ms", "duration_s", "st_rt",
                  "st_ch", "lesson_type", "exchanges", "report_version", "report_path")
CLASSROOM_COLUMNS = ("lesson_id", "classroom_id", "school_id", "role", "present_s", "late_s",
                     "early_leave_s", "attendance_ratio", "reconnects", "talk_s", "turns",
                     "hand_raises", "head_count_median", "head_count_max", "rtt_ms",
                     "loss_percent", "latency_ms")


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class ReportStore:
    """Blocking DB access (call from a worker thread in the mixer). One connection per
    call, so any thread may use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown_url = redact_url(url)
        """``url`` as shown in replies, events and logs (no password, no key)."""
        if url.startswith("sqlite:///"):
            self.kind = "sqlite"
            self.path = Path(url[len("sqlite:///"):])
        elif url.startswith(("postgresql://", "postgres://")):
            self.kind = "postgresql"
        else:
            raise ConfigError(f"analytics.database_url {self.shown_url!r}: use sqlite:///PATH or "
                              "postgresql://...")

    def exists(self) -> bool:
        """Whether the database is there to read (a SQLite file; PostgreSQL: assumed)."""
        return self.kind != "sqlite" or self.path.is_file()

    @contextmanager
    def _connect(self, write: bool = True) -> Iterator[Any]:
        if self.kind == "sqlite" and not write:
            # Reading never creates a file: a wrong path must not leave an empty database.
            conn: Any = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                        timeout=10)
        elif self.kind == "sqlite":
            private_dir(self.path.parent)
            # SQLite gives its -wal/-journal files the database's mode: owner only.
            create_private(self.path)
            conn = sqlite3.connect(self.path, timeout=10)
            # Several writers (a node's media workers) and readers (reports) at once: in
            # WAL mode readers never wait for a writer, writers queue on the 10 s busy
            # timeout. The mode is stored in the file; setting it again is a no-op.
            conn.execute("PRAGMA journal_mode=WAL")
        else:
            try:
                import psycopg
            except ImportError:
                raise ConfigError("a postgresql:// database_url needs the 'psycopg' package"
                                  ) from None
            conn = psycopg.connect(self.url)
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def _sql(self, sql: str) -> str:
        return _pg(sql) if self.kind == "postgresql" else sql

    def init(self) -> None:
        """Create the tables if missing."""
        with self._connect() as conn:
            cur = conn.cursor()
            for stmt in SCHEMA:
                cur.execute(stmt)

    def save(self, lesson: dict[str, Any], classrooms: Sequence[dict[str, Any]]) -> None:
        """Insert or replace one lesson's rows (keys are the column names)."""
        self.init()
        with self._connect() as conn:
            cur = conn.cursor()
            lid = lesson["lesson_id"]
            cur.execute(self._sql("DELETE FROM lesson_classrooms WHERE lesson_id = ?"), (lid,))
            cur.execute(self._sql("DELETE FROM lessons WHERE lesson_id = ?"), (lid,))
            cur.execute(self._sql(
                f"INSERT INTO lessons ({', '.join(LESSON_COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in LESSON_COLUMNS)})"),
                tuple(lesson.get(c) for c in LESSON_COLUMNS))
            for row in classrooms:
                cur.execute(self._sql(
                    f"INSERT INTO lesson_classrooms ({', '.join(CLASSROOM_COLUMNS)}) VALUES "
                    f"({', '.join('?' for _ in CLASSROOM_COLUMNS)})"),
                    tuple(row.get(c) for c in CLASSROOM_COLUMNS))

    def _readable(self) -> bool:
        """Whether there are tables to read (PostgreSQL: create them, as before)."""
        if self.kind != "sqlite":
            self.init()
            return True
        if not self.path.is_file():
            return False
        with self._connect(write=False) as conn:
            cur = conn.cursor()
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            names = {r[0] for r in cur.fetchall()}
        return {"lessons", "lesson_classrooms"} <= names

    def lessons(self, from_ms: int | None = None, to_ms: int | None = None
                ) -> list[dict[str, Any]]:
        """Lessons started in ``[from_ms, to_ms)`` (epoch ms), oldest first; none from a
        SQLite file that is not there or has no tables yet (nothing is created)."""
        if not self._readable():
            return []
        sql = f"SELECT {', '.join(LESSON_COLUMNS)} FROM lessons WHERE started_ms >= ? " \
              "AND started_ms < ? ORDER BY started_ms"
        with self._connect(write=False) as conn:
            cur = conn.cursor()
            cur.execute(self._sql(sql), (from_ms or 0, to_ms or 2**62))
            return [dict(zip(LESSON_COLUMNS, r, strict=True)) for r in cur.fetchall()]

    def classrooms(self, lesson_ids: Sequence[str]) -> list[dict[str, Any]]:
        if not lesson_ids or not self._readable():
            return []
        sql = f"SELECT {', '.join(CLASSROOM_COLUMNS)} FROM lesson_classrooms WHERE lesson_id " \
              f"IN ({', '.join('?' for _ in lesson_ids)}) ORDER BY lesson_id, classroom_id"
        with self._connect(write=False) as conn:
            cur = conn.cursor()
            cur.execute(self._sql(sql), tuple(lesson_ids))
            return [dict(zip(CLASSROOM_COLUMNS, r, strict=True)) for r in cur.fetchall()]
