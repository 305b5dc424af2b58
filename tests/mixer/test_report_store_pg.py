"""The report store's schema and queries, unchanged, on a real PostgreSQL (Debian's
postgresql, started by scripts/pgserver.sh on loopback)."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mixer.report import build_report, db_rows
from mixer.report_term import term_figures
from mixer.store import ReportStore
from syncclass.config import default_config_path, load_config
from syncclass.demo import free_port
from tests.mixer.test_report_files import data_for, lesson_at

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    data = tempfile.mkdtemp(prefix="syncclass-pg-")
    port = free_port()
    log = Path(data + ".log")
    with log.open("wb") as fh:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "pgserver.sh"), data,
                                 str(port)], stdout=fh, stderr=subprocess.STDOUT)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                out = log.read_text(errors="replace")
                raise RuntimeError(f"pgserver.sh exited {proc.returncode}: {out}")
            try:
                with psycopg.connect(url, connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)
        log.unlink(missing_ok=True)


def test_same_schema_and_queries_on_postgresql(pg_url: str) -> None:
    config = load_config(default_config_path())
    store = ReportStore(pg_url)
    monday = dt.datetime(2026, 11, 2, 8, 30).astimezone()
    for i in range(3):
        rep = build_report(config, data_for(lesson_at(monday + dt.timedelta(days=i), n=i)),
                           generated_ms=1)
        store.save(*db_rows(rep, f"/r/{i}/report.json"))
    store.save(*db_rows(rep, "again"))  # replace, not duplicate
    lessons = store.lessons()
    assert [x["lesson_id"] for x in lessons] == ["math-g3-0", "math-g3-1", "math-g3-2"]
    assert lessons[2]["report_path"] == "again"
    assert isinstance(lessons[0]["started_ms"], int) and lessons[0]["started_ms"] > 2**31
    rows = store.classrooms(["math-g3-1"])
    assert [r["classroom_id"] for r in rows] == ["hetou-3", "main-3-1", "shanping-3"]
    fig = term_figures(config, store, dt.date(2026, 11, 1), dt.date(2026, 11, 30))
    assert fig["pairings"][0]["subjects"][0]["lessons"] == 3
    # The same rows from SQLite give the same figures.
    sqlite_store = ReportStore(f"sqlite:///{tempfile.mkdtemp()}/a.db")
    for x in lessons:
        sqlite_store.save(x, store.classrooms([x["lesson_id"]]))
    assert term_figures(config, sqlite_store, dt.date(2026, 11, 1), dt.date(2026, 11, 30)) == fig
