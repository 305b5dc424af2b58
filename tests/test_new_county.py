"""A county written from the README alone (``tests/data/counties/qingshui.yaml``, not a copy
of the sample; issue 24): it passes ``check-config``, its unquoted ``start: 9:00`` is 09:00,
and a term of its lessons gives the term table a person would count by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mixer.report import LessonData, build_report, db_rows
from mixer.report_term import display_width, render_table, term_figures
from mixer.store import ReportStore
from syncclass.analytics import AttendanceSession
from syncclass.cli import main
from syncclass.config import CountyConfig, load_config
from syncclass.lesson import Lesson

COUNTY = Path(__file__).parent / "data" / "counties" / "qingshui.yaml"
MAIN, BAIYUN, SHIXIA, LIULIN = "qs2-4-2", "baiyun-4", "shixia-4", "liulin-4"
EARLY_LEAVES = (3, 7)
"""Lessons (by number) that Shixia leaves 10 minutes early."""


@pytest.fixture
def config() -> CountyConfig:
    return load_config(COUNTY)


def test_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(COUNTY)]) == 0
    out = capsys.readouterr().out
    assert "OK — county 清水县, 4 classrooms, 1 pairings, 1 timetable entries" in out
    config = load_config(COUNTY)
    assert config.timetable[0].start == dt.time(9, 0)  # written unquoted: 9:00


def lesson(n: int, day: dt.date) -> LessonData:
    """Lesson ``n`` held on the timetable (09:00, 40 min) on ``day``: the main classroom
    and Baiyun connect within seconds, Shixia too (and leaves 10 min early in
    :data:`EARLY_LEAVES`), Liulin joins 10 minutes late; Baiyun raises its hand twice."""
    s = int(dt.datetime.combine(day, dt.time(9, 0)).astimezone().timestamp() * 1000)
    e = s + 40 * 60_000
    shixia_end = e - 600_000 if n in EARLY_LEAVES else e
    return LessonData(
        lesson=Lesson(f"yuwen-{n}", "qs2-yuwen", MAIN, [BAIYUN, SHIXIA, LIULIN], "语文",
                      "四年级", "陈老师", "yuwen-g4", "ended", s, e),
        sessions={MAIN: [AttendanceSession(s + 2000, e, "lesson_ended")],
                  BAIYUN: [AttendanceSession(s + 3000, e, "lesson_ended")],
                  SHIXIA: [AttendanceSession(s + 4000, shixia_end, "leave")],
                  LIULIN: [AttendanceSession(s + 600_000, e, "lesson_ended")]},
        speech={MAIN: [(s + 10_000, s + 300_000)], BAIYUN: [(s + 305_000, s + 320_000)]},
        hands={BAIYUN: [s + 60_000, s + 200_000]},
    )


def test_term_table_of_its_lessons(config: CountyConfig, tmp_path: Path) -> None:
    store = ReportStore(f"sqlite:///{tmp_path / 'analytics.db'}")
    days = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(16)]
    school_days = [d for d in days if d.isoweekday() <= 5][:12]
    for n, day in enumerate(school_days, 1):
        rep = build_report(config, lesson(n, day), generated_ms=1)
        if n == 1:
            # On the timetable at 09:00 (00:09 would put it off the timetable).
            assert rep["lesson"]["on_timetable"] and rep["lesson"]["late_start_s"] == 0
            rooms = {c["classroom_id"]: c for c in rep["classrooms"]}
            assert rooms[LIULIN]["late_s"] == 600 and rooms[BAIYUN]["late_s"] == 3
            assert rooms[BAIYUN]["hand_raises"]["count"] == 2
        store.save(*db_rows(rep, None))
    # A lesson after the term's range is not counted.
    store.save(*db_rows(build_report(config, lesson(99, dt.date(2026, 10, 12)), 1), None))

    fig = term_figures(config, store, dt.date(2026, 9, 1), dt.date(2026, 9, 30))
    [p] = fig["pairings"]
    assert p["pairing_id"] == "qs2-yuwen" and p["main_school"] == "qingshui-no2"
    assert p["receiving_schools"] == ["baiyun-point", "liulin-point", "shixia-primary"]
    [s] = p["subjects"]
    # By hand: each receiving classroom's share of the 2400 s lesson, 12 lessons.
    baiyun = round((2400 - 3) / 2400, 4)
    shixia, shixia_early = round((2400 - 4) / 2400, 4), round((1800 - 4) / 2400, 4)
    liulin = round(1800 / 2400, 4)
    mean = (12 * baiyun + 10 * shixia + 2 * shixia_early + 12 * liulin) / 36
    assert s["subject"] == "语文" and s["lessons"] == 12 and s["hours"] == 8.0
    assert s["attendance_ratio"] == pytest.approx(round(mean, 4))
    assert s["attendance_ratio"] == pytest.approx(0.9018)
    assert s["meets_lessons_target"] and s["meets_attendance_target"]
    assert p["subject_count"] == 1 and not p["meets_subjects_target"]
    assert not p["meets_all_targets"]

    table = render_table(fig)
    lines = table.splitlines()
    row = next(line for line in lines if line.startswith("qs2-yuwen"))
    head = lines[1]
    # Columns after 语文 line up with the header by display width.
    assert display_width(row[: row.index("8.00") + 4]) == display_width(
        head[: head.index("hours") + 5])
    assert "lessons met (12 >= 10), attendance met (90% >= 80%)" in row
    assert ("met: 语文 lessons (12 of >= 10), 语文 attendance; "
            "NOT MET: subjects (1 of >= 2)") in table
