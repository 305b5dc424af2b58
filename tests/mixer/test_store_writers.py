"""The analytics SQLite store with several writers at once (a node's media workers, each
saving its lessons' rows) and a reader (reports) beside them (issue 20)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from mixer.store import LESSON_COLUMNS, ReportStore


def _lesson(lid: str, started_ms: int) -> dict[str, object]:
    return {c: None for c in LESSON_COLUMNS} | {
        "lesson_id": lid, "pairing_id": "p", "main_classroom": "m", "main_school": "s",
        "subject": "数学", "grade": "三年级", "teacher": "王老师", "started_ms": started_ms,
        "ended_ms": started_ms + 1, "duration_s": 0.001, "exchanges": 0, "report_version": 1}


def _room(lid: str) -> dict[str, object]:
    zero = ("present_s", "late_s", "early_leave_s", "attendance_ratio", "reconnects",
            "talk_s", "turns", "hand_raises")
    return {c: 0 for c in zero} | {"lesson_id": lid, "classroom_id": "c", "school_id": "s",
                                   "role": "receiving"}


def test_concurrent_writers_and_reader(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'analytics.db'}"
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        store = ReportStore(url)  # one per worker process, as in a node
        try:
            for i in range(25):
                store.save(_lesson(f"w{worker}-{i}", worker * 1000 + i),
                           [_room(f"w{worker}-{i}")])
        except BaseException as exc:  # a locked database must not lose a lesson
            errors.append(exc)

    def read() -> None:
        store = ReportStore(url)
        try:
            for _ in range(50):
                store.lessons()
        except BaseException as exc:
            errors.append(exc)

    ReportStore(url).init()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=read))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    rows = ReportStore(url).lessons()
    assert len(rows) == 100
    assert len(ReportStore(url).classrooms([r["lesson_id"] for r in rows])) == 100
    # Readers do not wait for writers: the file is in write-ahead-log mode.
    with sqlite3.connect(tmp_path / "analytics.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
