"""Report building, files, database rows and the bureau's term figures (no processes)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mixer.analytics import recording_folder
from mixer.report import LessonData, build_report, db_rows, render_html, write_report
from mixer.report_term import render_csv, render_table, term_figures
from mixer.store import ReportStore
from syncclass.analytics import AttendanceSession
from syncclass.cli import main
from syncclass.config import CountyConfig, default_config_path, load_config
from syncclass.errors import ConfigError
from syncclass.lesson import Lesson

MAIN, A, B = "main-3-1", "hetou-3", "shanping-3"


@pytest.fixture
def config() -> CountyConfig:
    return load_config(default_config_path())


def lesson_at(start: dt.datetime, minutes: float = 40, subject: str = "数学",
              n: int = 1) -> Lesson:
    s = int(start.timestamp() * 1000)
    return Lesson(f"math-g3-{n}", "shiyan-rural-math", MAIN, [A, B], subject, "三年级", "王老师",
                  "math-g3", "ended", s, s + int(minutes * 60_000))


def data_for(lesson: Lesson) -> LessonData:
    s = lesson.started_ms
    e = lesson.ended_ms
    assert s is not None and e is not None
    return LessonData(
        lesson=lesson,
        sessions={MAIN: [AttendanceSession(s + 500, e, "lesson_ended")],
                  A: [AttendanceSession(s + 120_000, e, "lesson_ended")],
                  B: [AttendanceSession(s + 1000, s + 600_000, "disconnected"),
                      AttendanceSession(s + 660_000, e - 300_000, "leave")]},
        speech={MAIN: [(s + 10_000, s + 70_000), (s + 100_000, s + 160_000)],
                A: [(s + 72_000, s + 80_000)], B: [(s + 161_000, s + 170_000)]},
        hands={A: [s + 60_000, s + 90_000]},
        heads={A: [(s + 5000, 12), (s + 15_000, 14), (s + 25_000, 13)]},
        network={A: [{"ts_ms": s + 1000 * i, "rtt_ms": 40.0 + i, "latency_ms": 180.0,
                      "bitrate_kbps": 1400.0, "fps": 15.0, "freezes": 0, "jitter_ms": 3.0,
                      "loss_percent": 0.0} for i in range(10)]},
    )


def snake(obj: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert re.fullmatch(r"[a-z][a-z0-9_]*", k), k
            snake(v)
    elif isinstance(obj, list):
        for v in obj:
            snake(v)


def test_report_contents(config: CountyConfig) -> None:
    start = dt.datetime(2026, 11, 23, 8, 31, 30).astimezone()  # a Monday, on the timetable
    lesson = lesson_at(start)
    rep = build_report(config, data_for(lesson), generated_ms=1)
    snake(rep)
    assert rep["lesson"]["on_timetable"] is True
    assert rep["lesson"]["late_start_s"] == pytest.approx(90.0)
    rooms = {c["classroom_id"]: c for c in rep["classrooms"]}
    assert rooms[A]["late_s"] == pytest.approx(120.0)
    assert rooms[B]["reconnects"] == 1 and rooms[B]["early_leave_s"] == pytest.approx(300.0)
    assert rooms[B]["present_s"] == pytest.approx(599 + 40 * 60 - 300 - 660)
    assert rooms[MAIN]["speech"]["talk_s"] == 120.0 and rooms[MAIN]["speech"]["turns"] == 2
    assert rooms[A]["hand_raises"]["count"] == 2
    assert rooms[A]["head_count"]["median"] == 13 and rooms[A]["head_count"]["max"] == 14
    assert rooms[A]["network"]["rtt_ms"] == pytest.approx(44.5)
    assert [x["site"] for x in rep["exchanges"]["items"]] == [A, B]
    assert rep["st"]["n"] == 80 and rep["st"]["lesson_type"] == "练习型"


def test_off_timetable_lesson_counts_from_its_start(config: CountyConfig) -> None:
    start = dt.datetime(2026, 11, 23, 15, 0).astimezone()
    rep = build_report(config, data_for(lesson_at(start)), generated_ms=1)
    assert rep["lesson"]["on_timetable"] is False and rep["lesson"]["late_start_s"] is None
    a = next(c for c in rep["classrooms"] if c["classroom_id"] == A)
    assert a["late_s"] == pytest.approx(120.0)


def test_files_written(config: CountyConfig, tmp_path: Path) -> None:
    rep = build_report(config, data_for(lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone())),
                       generated_ms=1)
    paths = write_report(rep, tmp_path / "r")
    assert json.loads(Path(paths["json"]).read_text(encoding="utf-8")) == rep
    rows = list(csv.DictReader(io.StringIO(Path(paths["csv"]).read_text(encoding="utf-8"))))
    assert [r["classroom_id"] for r in rows] == [MAIN, A, B]
    assert rows[1]["hand_raises"] == "2"
    html = Path(paths["html"]).read_text(encoding="utf-8")
    for chart in ("speech", "st_curve", "attendance", "latency", "rtt"):
        assert f'data-chart="{chart}"' in html
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert not list((tmp_path / "r").glob("*.tmp"))


def test_html_escapes_names(config: CountyConfig) -> None:
    lesson = lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone())
    lesson.teacher = "<script>alert(1)</script>"
    html = render_html(build_report(config, data_for(lesson), generated_ms=1))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_store_and_term_figures(config: CountyConfig, tmp_path: Path) -> None:
    store = ReportStore(f"sqlite:///{tmp_path / 'a.db'}")
    monday = dt.datetime(2026, 11, 2, 8, 30).astimezone()
    for i in range(12):
        subject = "数学" if i < 10 else "语文"
        lesson = lesson_at(monday + dt.timedelta(days=i), subject=subject, n=i)
        rep = build_report(config, data_for(lesson), generated_ms=1)
        store.save(*db_rows(rep, None))
    # Saving again replaces, never duplicates.
    store.save(*db_rows(rep, "x"))
    assert len(store.lessons()) == 12
    fig = term_figures(config, store, dt.date(2026, 11, 1), dt.date(2026, 11, 30))
    p = fig["pairings"][0]
    subj = {s["subject"]: s for s in p["subjects"]}
    assert subj["数学"]["lessons"] == 10 and subj["数学"]["meets_lessons_target"]
    assert subj["语文"]["lessons"] == 2 and not subj["语文"]["meets_lessons_target"]
    assert subj["数学"]["hours"] == pytest.approx(10 * 40 / 60, abs=0.01)
    assert p["subject_count"] == 2 and p["meets_subjects_target"]
    assert not p["meets_all_targets"]
    assert "NOT MET" in render_table(fig)
    assert render_csv(fig).splitlines()[0].startswith("pairing_id,main_school,")
    # A window with no lessons still lists the pairing, as not met.
    empty = term_figures(config, store, dt.date(2026, 12, 1), dt.date(2026, 12, 31))
    assert empty["pairings"][0]["lessons"] == 0 and not empty["pairings"][0][
        "meets_subjects_target"]
    with pytest.raises(ValueError, match="before it starts"):
        term_figures(config, store, dt.date(2026, 12, 31), dt.date(2026, 12, 1))


def test_report_cli(config: CountyConfig, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    store = ReportStore(db)
    rep = build_report(config, data_for(lesson_at(dt.datetime(2026, 11, 2, 8, 30).astimezone())),
                       generated_ms=1)
    store.save(*db_rows(rep, None))
    assert main(["report", "--database", db, "--from", "2026-11-01", "--to", "2026-11-30",
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "syncclass.term_report"
    assert out["pairings"][0]["subjects"][0]["lessons"] == 1
    assert main(["report", "--database", db, "--from", "2026-11-01", "--format", "csv",
                 "--out", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text(encoding="utf-8").count("\n") == 2
    assert main(["report", "--database", db, "--from", "11/2026"]) == 2
    assert "bad date" in capsys.readouterr().err


def test_bad_database_url() -> None:
    with pytest.raises(ConfigError, match="sqlite"):
        ReportStore("mysql://x")


def test_recording_folder(config: CountyConfig, tmp_path: Path) -> None:
    """The folder comes from the config and a checked lesson id, never from a message."""
    rc = config.recorder.model_copy(update={"archive_dir": str(tmp_path / "archive")})
    assert recording_folder(rc, "l1") == (tmp_path / "archive" / "l1").resolve()
    for bad in ["../x", "../../etc", "/x", "a/b", ".", "..", "", "L1"]:
        assert recording_folder(rc, bad) is None, bad
    s3 = config.recorder.model_copy(update={"archive": "s3"})
    assert recording_folder(s3, "l1") is None
