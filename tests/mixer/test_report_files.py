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


def test_recording_folder() -> None:
    assert recording_folder({"mp4": "/srv/archive/l1/lesson.mp4"}) == "/srv/archive/l1"
    assert recording_folder({"mp4": "s3://bucket/l1/lesson.mp4"}) is None
    assert recording_folder({"folder": "/x"}) == "/x"


# -- issue 24: the operator's term report -------------------------------------------------------
def test_term_table_aligns_by_display_width(config: CountyConfig, tmp_path: Path) -> None:
    from mixer.report_term import display_width

    store = ReportStore(f"sqlite:///{tmp_path / 'a.db'}")
    monday = dt.datetime(2026, 11, 2, 8, 30).astimezone()
    for i, subject in enumerate(["数学", "语文", "English"]):
        rep = build_report(config, data_for(lesson_at(monday + dt.timedelta(days=i),
                                                      subject=subject, n=i)), generated_ms=1)
        store.save(*db_rows(rep, None))
    table = render_table(term_figures(config, store, dt.date(2026, 11, 1),
                                      dt.date(2026, 11, 30)))
    lines = table.splitlines()
    header = lines[1]
    rows = [line for line in lines if line.startswith("shiyan-rural-math")]
    assert len(rows) == 3
    # The "hours" column ends at the same terminal column on every row (语文 is 4 wide).
    end = display_width(header[: header.index("hours") + len("hours")])
    for row in rows:
        hours = re.search(r"\d+\.\d\d", row)
        assert hours is not None
        assert display_width(row[: hours.end()]) == end, table
    assert display_width("语文") == 4 and display_width("ab") == 2


def test_term_table_says_which_targets_are_met(config: CountyConfig, tmp_path: Path) -> None:
    store = ReportStore(f"sqlite:///{tmp_path / 'a.db'}")
    monday = dt.datetime(2026, 11, 2, 8, 30).astimezone()
    for i in range(10):  # 10 数学 lessons meet the lessons target; only 1 subject
        rep = build_report(config, data_for(lesson_at(monday + dt.timedelta(days=i), n=i)),
                           generated_ms=1)
        store.save(*db_rows(rep, None))
    table = render_table(term_figures(config, store, dt.date(2026, 11, 1),
                                      dt.date(2026, 11, 30)))
    assert "all targets NOT MET" not in table
    assert "met: 数学 lessons (10 of >= 10)" in table
    assert "NOT MET: subjects (1 of >= 2)" in table
    assert "lessons met (10 >= 10)" in table


def test_excel_csv_has_bom_and_crlf(config: CountyConfig, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    rep = build_report(config, data_for(lesson_at(dt.datetime(2026, 11, 2, 8, 30).astimezone())),
                       generated_ms=1)
    ReportStore(db).save(*db_rows(rep, None))
    out = tmp_path / "t.csv"
    assert main(["report", "--database", db, "--from", "2026-11-01", "--to", "2026-11-30",
                 "--format", "csv-excel", "--out", str(out)]) == 0
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfpairing_id,") and b"\r\n" in raw
    assert raw.decode("utf-8-sig").replace("\r\n", "\n") == render_csv(
        term_figures(config, ReportStore(db), dt.date(2026, 11, 1), dt.date(2026, 11, 30)))


def test_report_reads_the_config_files_database(config: CountyConfig, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    site = tmp_path / "county"
    data = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    data["mixer"]["data_dir"] = "mixer-data"  # relative: to the config file's folder
    site.mkdir()
    (site / "county.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    rep = build_report(config, data_for(lesson_at(dt.datetime(2026, 11, 2, 8, 30).astimezone())),
                       generated_ms=1)
    ReportStore(f"sqlite:///{site / 'mixer-data' / 'analytics.db'}").save(*db_rows(rep, None))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["report", "--config", str(site / "county.yaml"), "--from", "2026-11-01",
            "--to", "2026-11-30", "--format", "json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["pairings"][0]["lessons"] == 1
    assert f"read from sqlite:///{site / 'mixer-data' / 'analytics.db'}" in captured.err
    assert "relative to the config file's folder" in captured.err
    # No lessons in the range: a warning, not a silent "NOT MET".
    assert main([*args[:3], "--from", "2027-01-01", "--to", "2027-01-31"]) == 0
    assert "warning: the database has no lessons" in capsys.readouterr().err
    # A database that is not there is an error, and reading creates nothing.
    assert main(["report", "--database", f"sqlite:///{elsewhere / 'none.db'}"]) == 1
    assert "no database at" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


def chart(html: str, name: str) -> str:
    return html.split(f'data-chart="{name}"')[1].split("</svg>")[0]


def absent_b(lesson: Lesson) -> LessonData:
    """Shanping G3 (B) is away from 600 s to 660 s; its network samples every 2 s."""
    data = data_for(lesson)
    s = lesson.started_ms
    assert s is not None
    data.network[B] = [{"ts_ms": s + 2000 * i, "rtt_ms": 50.0 + i % 3, "latency_ms": 150.0}
                       for i in range(1, 400) if not 600 <= 2 * i <= 660]
    return data


def test_latency_and_rtt_lines_break_where_a_classroom_was_absent(config: CountyConfig) -> None:
    lesson = lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone())
    html = render_html(build_report(config, absent_b(lesson), generated_ms=1))
    for name in ("latency", "rtt"):
        svg = chart(html, name)
        lines = re.findall(r'<polyline class="series" data-series="Shanping G3" '
                           r'points="([^"]+)"', svg)
        assert len(lines) == 2, name  # one line before the absence, one after
        x_end_first = float(lines[0].split()[-1].split(",")[0])
        x_start_second = float(lines[1].split()[0].split(",")[0])
        # Nothing is drawn across 600-660 s (x = 170 + 710 * t / 2400).
        assert x_end_first <= 170 + 710 * 600 / 2400 + 0.1
        assert x_start_second >= 170 + 710 * 660 / 2400 - 0.1
        # Hetou's samples are continuous: one line.
        assert len(re.findall(r'data-series="Hetou G3" points=', svg)) == 1


def test_st_chart_is_full_width_with_ticks(config: CountyConfig) -> None:
    lesson = lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone())
    html = render_html(build_report(config, data_for(lesson), generated_ms=1))
    st, latency = chart(html, "st_curve"), chart(html, "latency")
    width = re.search(r'width="(\d+)"', st)
    assert width is not None and width[1] == re.search(r'width="(\d+)"', latency)[1]  # type: ignore[index]
    assert re.search(r'viewBox="0 0 900 \d+"', st)
    assert st.count('class="tick" data-axis="t"') >= 5
    assert st.count('class="tick" data-axis="s"') >= 5
    sizes = [int(x) for x in re.findall(r'font-size="(\d+)"', st)]
    assert sizes and min(sizes) >= 13
    assert 'class="st"' not in html  # no flex box squeezing the chart


def test_st_chart_as_wide_as_the_others_in_chromium(config: CountyConfig,
                                                    tmp_path: Path) -> None:
    import subprocess

    lesson = lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone())
    html = render_html(build_report(config, data_for(lesson), generated_ms=1))
    probe = ("<script>for (const n of ['st_curve', 'latency']) { const r = document."
             "querySelector(`[data-chart=${n}]`).getBoundingClientRect(); document.body."
             "setAttribute(`data-${n.replace('_', '-')}-width`, r.width); }</script></body>")
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", probe), encoding="utf-8")
    dom = subprocess.run(
        ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=60).stdout
    st = re.search(r'data-st-curve-width="([\d.]+)"', dom)
    lat = re.search(r'data-latency-width="([\d.]+)"', dom)
    assert st is not None and lat is not None, dom[-500:]
    assert float(st[1]) == pytest.approx(float(lat[1])) and float(lat[1]) >= 880


def test_first_contact_and_legend(config: CountyConfig) -> None:
    lesson = lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone())
    data = data_for(lesson)
    s = lesson.started_ms
    assert s is not None
    data.contacts = {A: s - 30_000, B: s + 200}  # A's agent was there before the start
    rep = build_report(config, data, generated_ms=1)
    rooms = {c["classroom_id"]: c for c in rep["classrooms"]}
    assert rooms[A]["first_contact_ms"] == s - 30_000
    assert rooms[A]["contact_to_join_s"] == pytest.approx(120.0)  # joined 120 s in
    assert rooms[B]["contact_to_join_s"] == pytest.approx(0.8)
    assert rooms[MAIN]["first_contact_ms"] is None
    html = render_html(rep)
    assert 'data-legend="attendance"' in html and "counts as late" in html
    assert "<td>-30.0</td>" in html
    rows = list(csv.DictReader(io.StringIO(render_csv_lesson(rep))))
    assert rows[2]["contact_to_join_s"] == "0.8"


def render_csv_lesson(rep: dict[str, Any]) -> str:
    from mixer.report import render_csv as lesson_csv

    return lesson_csv(rep)


def test_lesson_excel_csv_written(config: CountyConfig, tmp_path: Path) -> None:
    rep = build_report(config, data_for(lesson_at(dt.datetime(2026, 11, 23, 8, 30).astimezone())),
                       generated_ms=1)
    paths = write_report(rep, tmp_path)
    raw = Path(paths["excel_csv"]).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\r\n") == 4
    assert raw.decode("utf-8-sig").replace("\r\n", "\n") == Path(paths["csv"]).read_text(
        encoding="utf-8")


def test_report_never_shows_a_database_password() -> None:
    from syncclass.cli import _without_password

    assert _without_password("postgresql://bureau:s3cret@db:5432/x") == \
        "postgresql://bureau:***@db:5432/x"
    assert _without_password("sqlite:////srv/a.db") == "sqlite:////srv/a.db"
