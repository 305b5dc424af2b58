"""The lesson report: versioned JSON, one CSV row per classroom, and a page with charts.

:func:`build_report` is pure (inputs → dict); :func:`write_report` writes
``report.json``, ``report.csv`` and ``report.html`` into a folder. The page draws its
charts as inline SVG generated here (no scripts, no CDN): who spoke when, the S-T curve,
attendance, and latency over time. Keys are snake_case, times epoch ms, durations s.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import itertools
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncclass.analytics.attendance import AttendanceSession, summarize
from syncclass.analytics.speech import Segment, find_exchanges, merge_turns, talk_ms
from syncclass.analytics.st import st_analysis
from syncclass.config import AnalyticsConfig, CountyConfig
from syncclass.lesson import Lesson
from syncclass.private_files import private_dir, write_private
from syncclass.protocol import dumps_strict, finite_or_none

from .headcount import METHOD as HEAD_COUNT_METHOD

REPORT_SCHEMA = "syncclass.lesson_report"
REPORT_VERSION = 1
CSV_COLUMNS = [
    "lesson_id", "classroom_id", "school_id", "role", "name", "present_s", "late_s",
    "early_leave_s", "attendance_ratio", "reconnects", "talk_s", "turns", "hand_raises",
    "head_count_median", "head_count_max", "rtt_ms", "jitter_ms", "loss_percent",
    "bitrate_kbps", "fps", "freezes", "latency_ms", "contact_to_join_s",
]
REPORT_FILES = {"json": "report.json", "csv": "report.csv", "excel_csv": "report-excel.csv",
                "html": "report.html"}
"""The files of a lesson report by key (``json`` first: it is the one rewritten).
``report-excel.csv`` is ``report.csv`` for Microsoft Excel (UTF-8 byte-order mark, CRLF),
which reads Chinese as GBK on a Chinese Windows without the mark."""
ATTENDANCE_RULE = (
    "Attendance counts from when a classroom's media (WebRTC peer) connects, not from its "
    "agent's first contact (hello): an agent needs about 2-6 s to start its camera and "
    "connect, and that time counts as late. 'first contact' is the hello, in s from the "
    "lesson start (negative: the agent was there before it started); 'contact to media' "
    "is that start-up time.")
ST_RULE = ("T: main classroom speech covers >= half of the window and >= any receiving "
           "classroom's; S: otherwise (pupils speaking, practice, silence). Windows aligned "
           "to multiples of the interval on the epoch clock.")


@dataclass
class LessonData:
    """What the mixer observed of one lesson (epoch ms throughout)."""

    lesson: Lesson
    sessions: dict[str, list[AttendanceSession]] = field(default_factory=dict)
    speech: dict[str, list[Segment]] = field(default_factory=dict)
    hands: dict[str, list[int]] = field(default_factory=dict)
    heads: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Head count samples ``(ts_ms, faces)`` per classroom."""
    network: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Network samples per classroom (``ts_ms``, ``rtt_ms``, ``jitter_ms``, ...)."""
    contacts: dict[str, int] = field(default_factory=dict)
    """Epoch ms of each classroom agent's first contact (``hello``) for this lesson."""
    recording_dir: str | None = None
    directing: list[dict[str, Any]] = field(default_factory=list)
    """Automatic directing's switches (``ts_ms``, ``active``, ``courseware``, ``reason``,
    ...; see :class:`syncclass.directing.Switch`)."""
    gaps: list[dict[str, Any]] = field(default_factory=list)
    """Stretches the analytics did not see: a node that held the lesson died
    (``start_ms``, ``end_ms``, ``duration_s``, ``reason``, ``checkpoint``; see
    :class:`syncclass.analytics.checkpoint.Gap`)."""
    network_thinned: int = 0
    """Network samples of the part before a fail-over dropped to bound the checkpoint."""


def scheduled_start_ms(config: CountyConfig, lesson: Lesson) -> tuple[int | None, bool]:
    """The timetable's start of this lesson on its day (epoch ms) and whether the lesson
    was held on the timetable: started between 30 min before the slot and its end."""
    entry = next((t for t in config.timetable if t.id == lesson.timetable_id), None)
    if entry is None or lesson.started_ms is None:
        return None, False
    started = dt.datetime.fromtimestamp(lesson.started_ms / 1000).astimezone()
    slot = dt.datetime.combine(started.date(), entry.start, tzinfo=started.tzinfo)
    slot_ms = int(slot.timestamp() * 1000)
    on = (started.isoweekday() in entry.weekdays and slot_ms - 30 * 60_000 <= lesson.started_ms
          <= slot_ms + entry.duration_min * 60_000)
    return slot_ms, on


def _median(values: list[float]) -> float | None:
    return round(float(statistics.median(values)), 2) if values else None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _network_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [float(s[key]) for s in samples if s.get(key) is not None]

    return {
        "rtt_ms": _median(col("rtt_ms")),
        "jitter_ms": _median(col("jitter_ms")),
        "loss_percent": _median(col("loss_percent")),
        "bitrate_kbps": _mean(col("bitrate_kbps")),
        "fps": _mean(col("fps")),
        "freezes": int(max(col("freezes"), default=0)),
        "latency_ms": _median(col("latency_ms")),
        "samples": len(samples),
    }


def build_report(config: CountyConfig, data: LessonData, generated_ms: int) -> dict[str, Any]:
    """The report of an ended lesson (``lesson.ended_ms`` set)."""
    acfg: AnalyticsConfig = config.analytics
    lesson = data.lesson
    if lesson.started_ms is None or lesson.ended_ms is None:
        raise ValueError(f"lesson {lesson.lesson_id} has not ended")
    start, end = lesson.started_ms, lesson.ended_ms
    slot_ms, on_timetable = scheduled_start_ms(config, lesson)
    expected = slot_ms if on_timetable else None
    gap_ms = round(acfg.turn_gap_s * 1000)
    speech = {cid: [(max(s, start), min(e, end)) for s, e in segs if min(e, end) > max(s, start)]
              for cid, segs in data.speech.items()}
    turns = {cid: merge_turns(segs, gap_ms) for cid, segs in speech.items()}
    exchanges = find_exchanges(turns.get(lesson.main, []),
                               {c: turns.get(c, []) for c in lesson.receiving},
                               round(acfg.exchange_window_s * 1000))
    st = st_analysis(speech.get(lesson.main, []),
                     {c: speech.get(c, []) for c in lesson.receiving}, start, end,
                     acfg.st_interval_s)
    classrooms = []
    for cid in lesson.classrooms:
        room = config.classroom(cid)
        att = summarize(data.sessions.get(cid, []), start, end, expected)
        heads = [c for _, c in data.heads.get(cid, [])]
        net = data.network.get(cid, [])
        contact = data.contacts.get(cid)
        to_join = (round((att.first_join_ms - max(contact, start)) / 1000, 3)
                   if contact is not None and att.first_join_ms is not None else None)
        classrooms.append({
            "classroom_id": cid,
            "school_id": room.school,
            "school_name": config.school(room.school).name,
            "name": room.name,
            "label": room.label,
            "role": room.role,
            "sessions": [s.to_dict() for s in data.sessions.get(cid, [])],
            "present_intervals": [list(i) for i in att.intervals],
            "present_s": att.present_s,
            "late_s": att.late_s,
            "early_leave_s": att.early_leave_s,
            "attendance_ratio": att.attendance_ratio,
            "reconnects": att.reconnects,
            "first_join_ms": att.first_join_ms,
            "last_leave_ms": att.last_leave_ms,
            "first_contact_ms": contact,
            "contact_to_join_s": to_join,
            "speech": {
                "talk_s": round(talk_ms(speech.get(cid, [])) / 1000, 3),
                "turns": len(turns.get(cid, [])),
                "segments": [list(s) for s in speech.get(cid, [])],
            },
            "hand_raises": {"count": len(data.hands.get(cid, [])),
                            "ts_ms": list(data.hands.get(cid, []))},
            "head_count": {
                "method": HEAD_COUNT_METHOD,
                "interval_s": acfg.head_count_interval_s,
                "median": _median([float(h) for h in heads]),
                "max": max(heads) if heads else None,
                "samples": [list(s) for s in data.heads.get(cid, [])],
            },
            "network": {**_network_summary(net), "timeline": net},
        })
    latencies = [x.response_latency_ms for x in exchanges]
    return {
        "schema": REPORT_SCHEMA,
        "version": REPORT_VERSION,
        "generated_ms": generated_ms,
        "county": config.county,
        "lesson": {
            **lesson.info().model_dump(exclude={"state"}),
            "main_school": config.classroom(lesson.main).school,
            "duration_s": round((end - start) / 1000, 3),
            "scheduled_start_ms": slot_ms,
            "on_timetable": on_timetable,
            "late_start_s": round(max(0, start - slot_ms) / 1000, 3)
            if on_timetable and slot_ms is not None else None,
        },
        "classrooms": classrooms,
        "exchanges": {
            "window_s": acfg.exchange_window_s,
            "count": len(exchanges),
            "median_response_latency_ms": _median([float(v) for v in latencies]),
            "items": [x.to_dict() for x in exchanges],
        },
        "st": {**st.to_dict(), "rule": ST_RULE},
        "attendance_rule": ATTENDANCE_RULE,
        "recording_dir": data.recording_dir,
        "directing": _directing_summary(data.directing, start, end),
        # Fail-overs: what the analytics missed (the classrooms' absence shows in
        # attendance; the recording has its own gap entry).
        "gaps": [{**g, "lesson_s": round((g["start_ms"] - start) / 1000, 3)}
                 for g in data.gaps],
        "network_samples_thinned": data.network_thinned,
    }


def _directing_summary(switches: list[dict[str, Any]], start: int,
                       end: int) -> dict[str, Any]:
    """Switches with their lesson time, and seconds each source was featured (active)."""
    items = [{**sw, "lesson_s": round((sw["ts_ms"] - start) / 1000, 3)} for sw in switches]
    featured_s: dict[str, float] = {}
    courseware_s = 0.0
    for i, sw in enumerate(items):
        a = max(start, sw["ts_ms"])
        b = min(end, items[i + 1]["ts_ms"] if i + 1 < len(items) else end)
        if b > a:
            featured_s[sw["active"]] = featured_s.get(sw["active"], 0.0) + (b - a) / 1000
            courseware_s += (b - a) / 1000 if sw["courseware"] else 0.0
    return {"switches": items, "count": max(0, len(items) - 1),
            "featured_s": {k: round(v, 3) for k, v in featured_s.items()},
            "courseware_s": round(courseware_s, 3)}


def render_csv(report: dict[str, Any], excel: bool = False) -> str:
    """One row per classroom (columns :data:`CSV_COLUMNS`). ``excel``: with a UTF-8
    byte-order mark and CRLF line ends, for Microsoft Excel."""
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\r\n" if excel else "\n")
    w.writeheader()
    for c in report["classrooms"]:
        net = c["network"]
        w.writerow({
            "lesson_id": report["lesson"]["lesson_id"], "classroom_id": c["classroom_id"],
            "school_id": c["school_id"], "role": c["role"], "name": c["name"],
            "present_s": c["present_s"], "late_s": c["late_s"],
            "early_leave_s": c["early_leave_s"], "attendance_ratio": c["attendance_ratio"],
            "reconnects": c["reconnects"], "talk_s": c["speech"]["talk_s"],
            "turns": c["speech"]["turns"], "hand_raises": c["hand_raises"]["count"],
            "head_count_median": c["head_count"]["median"],
            "head_count_max": c["head_count"]["max"], "rtt_ms": net["rtt_ms"],
            "jitter_ms": net["jitter_ms"], "loss_percent": net["loss_percent"],
            "bitrate_kbps": net["bitrate_kbps"], "fps": net["fps"], "freezes": net["freezes"],
            "latency_ms": net["latency_ms"],
            "contact_to_join_s": c.get("contact_to_join_s"),
        })
    return ("\ufeff" if excel else "") + out.getvalue()


def db_rows(report: dict[str, Any], report_path: str | None
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report as rows of :mod:`mixer.store`'s tables."""
    les = report["lesson"]
    lesson_row = {
        "lesson_id": les["lesson_id"], "pairing_id": les["pairing_id"],
        "main_classroom": les["main"], "main_school": les["main_school"],
        "subject": les["subject"], "grade": les["grade"], "teacher": les["teacher"],
        "timetable_id": les["timetable_id"], "started_ms": les["started_ms"],
        "ended_ms": les["ended_ms"], "duration_s": les["duration_s"],
        "st_rt": report["st"]["rt"], "st_ch": report["st"]["ch"],
        "lesson_type": report["st"]["lesson_type"], "exchanges": report["exchanges"]["count"],
        "report_version": report["version"], "report_path": report_path,
    }
    rows = []
    for c in report["classrooms"]:
        rows.append({
            "lesson_id": les["lesson_id"], "classroom_id": c["classroom_id"],
            "school_id": c["school_id"], "role": c["role"], "present_s": c["present_s"],
            "late_s": c["late_s"], "early_leave_s": c["early_leave_s"],
            "attendance_ratio": c["attendance_ratio"], "reconnects": c["reconnects"],
            "talk_s": c["speech"]["talk_s"], "turns": c["speech"]["turns"],
            "hand_raises": c["hand_raises"]["count"],
            "head_count_median": c["head_count"]["median"],
            "head_count_max": c["head_count"]["max"], "rtt_ms": c["network"]["rtt_ms"],
            "loss_percent": c["network"]["loss_percent"],
            "latency_ms": c["network"]["latency_ms"],
        })
    return lesson_row, rows


# -- page ---------------------------------------------------------------------------------------
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
_W, _LEFT, _RIGHT = 900, 170, 20


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _time_axis(start: int, end: int, y: int, height: int) -> list[str]:
    span = max(1, end - start)
    step_s = next(s for s in (5, 10, 30, 60, 120, 300, 600, 1200) if span / 1000 / s <= 10)
    out = []
    t = 0
    while t * 1000 <= span:
        x = _LEFT + (_W - _LEFT - _RIGHT) * t * 1000 / span
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + height}" '
                   'stroke="#ddd"/>')
        label = f"{t // 60}:{t % 60:02d}"
        out.append(f'<text x="{x:.1f}" y="{y + height + 14}" font-size="11" '
                   f'text-anchor="middle">{label}</text>')
        t += step_s
    return out


def _timeline_svg(name: str, rows: list[tuple[str, list[list[int]], list[int]]], start: int,
                  end: int) -> str:
    """Rows of ``(label, intervals, markers)`` on a lesson time axis."""
    row_h = 26
    h = 20 + row_h * len(rows) + 24
    span = max(1, end - start)
    scale = (_W - _LEFT - _RIGHT) / span
    parts = [f'<svg class="chart" data-chart="{name}" width="{_W}" height="{h}" '
             f'viewBox="0 0 {_W} {h}" xmlns="http://www.w3.org/2000/svg">']
    parts += _time_axis(start, end, 10, row_h * len(rows) + 10)
    for i, (label, intervals, markers) in enumerate(rows):
        y = 14 + i * row_h
        color = COLORS[i % len(COLORS)]
        parts.append(f'<text x="{_LEFT - 8}" y="{y + 15}" font-size="12" '
                     f'text-anchor="end">{_e(label)}</text>')
        parts.append(f'<rect x="{_LEFT}" y="{y}" width="{_W - _LEFT - _RIGHT}" '
                     f'height="{row_h - 6}" fill="#f3f4f6"/>')
        for a, b in intervals:
            x = _LEFT + (a - start) * scale
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{y}" '
                         f'width="{max(1.0, (b - a) * scale):.1f}" height="{row_h - 6}" '
                         f'fill="{color}"><title>{(a - start) / 1000:.1f}–'
                         f'{(b - start) / 1000:.1f} s</title></rect>')
        for m in markers:
            x = _LEFT + (m - start) * scale
            parts.append(f'<polygon class="marker" points="{x:.1f},{y - 2} {x - 5:.1f},'
                         f'{y + row_h - 4} {x + 5:.1f},{y + row_h - 4}" fill="#111">'
                         '<title>hand raised</title></polygon>')
    parts.append("</svg>")
    return "\n".join(parts)


def _tick_step(span: float, max_ticks: int = 10) -> int:
    """A tick step of 1, 2 or 5 times a power of ten giving at most ``max_ticks`` ticks
    over ``span``."""
    power = 1
    while True:
        for m in (1, 2, 5):
            if span / (m * power) <= max_ticks:
                return m * power
        power *= 10


ST_SIZE = 420
"""Side of the S-T plot's square, px (S and T share one scale: the diagonal is Rt = 0.5)."""


def _st_svg(st: dict[str, Any]) -> str:
    """The S-T curve: T samples across, S samples up, on one scale, with ticks every few
    samples (labelled with their count, and on the S axis with the lesson time they make,
    m:ss) and the figures beside it; the chart is as wide as the other charts."""
    curve: list[list[int]] = st["curve"]
    interval_s = float(st["interval_s"])
    top, bottom = 20, 64
    h = top + ST_SIZE + bottom
    n = max(1, max((max(p) for p in curve), default=1))
    step = _tick_step(n, 8)
    n_axis = -(-n // step) * step  # axis to a whole tick
    scale = ST_SIZE / n_axis
    x0, y0 = _LEFT, top + ST_SIZE  # the origin
    parts = [f'<svg class="chart" data-chart="st_curve" width="{_W}" height="{h}" '
             f'viewBox="0 0 {_W} {h}" xmlns="http://www.w3.org/2000/svg">']
    for k in range(0, n_axis + 1, step):
        d = k * scale
        at_s = round(k * interval_s)  # lesson time of the k-th sample, m:ss
        clock = f"{at_s // 60}:{at_s % 60:02d}"
        parts.append(f'<line class="grid" x1="{x0 + d:.1f}" y1="{top}" x2="{x0 + d:.1f}" '
                     f'y2="{y0}" stroke="#eee"/>')
        parts.append(f'<line class="grid" x1="{x0}" y1="{y0 - d:.1f}" x2="{x0 + ST_SIZE}" '
                     f'y2="{y0 - d:.1f}" stroke="#eee"/>')
        parts.append(f'<line class="tick" data-axis="t" x1="{x0 + d:.1f}" y1="{y0}" '
                     f'x2="{x0 + d:.1f}" y2="{y0 + 6}" stroke="#333"/>')
        parts.append(f'<text x="{x0 + d:.1f}" y="{y0 + 20}" font-size="13" '
                     f'text-anchor="middle">{k}</text>')
        parts.append(f'<line class="tick" data-axis="s" x1="{x0 - 6}" y1="{y0 - d:.1f}" '
                     f'x2="{x0}" y2="{y0 - d:.1f}" stroke="#333"/>')
        parts.append(f'<text x="{x0 - 10}" y="{y0 - d + 4:.1f}" font-size="13" '
                     f'text-anchor="end">{k} <tspan fill="#667">({clock})</tspan></text>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + ST_SIZE}" y2="{y0}" stroke="#333"/>')
    parts.append(f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{y0}" stroke="#333"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0 + ST_SIZE}" y2="{top}" stroke="#bbb" '
                 'stroke-dasharray="4 4"><title>Rt = 0.5</title></line>')
    parts.append(f'<text x="{x0 + ST_SIZE / 2}" y="{y0 + 44}" font-size="14" '
                 f'text-anchor="middle">T 教师行为 (samples of {interval_s:g} s)</text>')
    parts.append(f'<text x="{x0 - 10}" y="{top - 6}" font-size="14" text-anchor="end">'
                 'S 学生行为</text>')
    pts = " ".join(f"{x0 + t * scale:.1f},{y0 - v * scale:.1f}" for t, v in curve)
    parts.append(f'<polyline class="curve" points="{pts}" fill="none" stroke="{COLORS[3]}" '
                 'stroke-width="2.5"/>')
    tx = x0 + ST_SIZE + 40
    lines = [f"N = {st['n']}", f"Rt = {st['rt']:.2f}", f"Ch = {st['ch']:.2f}",
             f"g = {st['g']}", f"{st['lesson_type']} ({st['lesson_type_en']})"]
    for i, text in enumerate(lines):
        parts.append(f'<text class="figure" x="{tx}" y="{top + 30 + 26 * i}" font-size="15">'
                     f'{_e(text)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _segments(samples: list[dict[str, Any]], key: str, present: list[list[int]],
              gap_ms: float) -> list[list[tuple[int, float]]]:
    """A classroom's samples of ``key`` as lines that break where it was absent: between
    two samples outside one ``present`` interval, across a missing value, or across a gap
    longer than ``gap_ms`` (samples are never joined across an absence)."""

    def interval_of(t: int) -> int | None:
        return next((i for i, (a, b) in enumerate(present) if a <= t <= b), None)

    out: list[list[tuple[int, float]]] = []
    line: list[tuple[int, float]] = []
    last: tuple[int, int | None] | None = None
    for sample in samples:
        t, v = int(sample["ts_ms"]), sample.get(key)
        if v is None:
            if line:
                out.append(line)
            line, last = [], None
            continue
        where = interval_of(t) if present else None
        if last is not None and (t - last[0] > gap_ms or (present and where != last[1])):
            out.append(line)
            line = []
        line.append((t, float(v)))
        last = (t, where)
    if line:
        out.append(line)
    return out


def _sample_gap_ms(samples: list[dict[str, Any]]) -> float:
    """Longest spacing of two samples on one line: 2.5 x the median spacing (a missed
    sample or two is joined, an absence is not)."""
    ts = sorted(int(s["ts_ms"]) for s in samples)
    diffs = [b - a for a, b in itertools.pairwise(ts) if b > a]
    return 2.5 * float(statistics.median(diffs)) if diffs else float("inf")


def _line_svg(name: str, series: list[tuple[str, list[list[tuple[int, float]]]]], start: int,
              end: int, unit: str) -> str:
    """Lines over lesson time; each series is a list of separate lines (broken at gaps)."""
    h, top, bottom = 240, 16, 30
    vals = [v for _, lines in series for line in lines for _, v in line]
    vmax = max(vals, default=1.0) * 1.1 or 1.0
    span = max(1, end - start)
    sx = (_W - _LEFT - _RIGHT) / span
    sy = (h - top - bottom) / vmax
    parts = [f'<svg class="chart" data-chart="{name}" width="{_W}" height="{h}" '
             f'viewBox="0 0 {_W} {h}" xmlns="http://www.w3.org/2000/svg">']
    parts += _time_axis(start, end, top, h - top - bottom)
    for frac in (0.0, 0.5, 1.0):
        y = h - bottom - frac * vmax * sy
        parts.append(f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{frac * vmax:.0f} {unit}</text>')
    for i, (label, lines) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        for line in lines:
            xy = [(_LEFT + (t - start) * sx, h - bottom - v * sy) for t, v in line]
            if len(xy) == 1:  # a lone sample between gaps: a dot
                parts.append(f'<circle class="series" data-series="{_e(label)}" '
                             f'cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="2.5" '
                             f'fill="{color}"><title>{_e(label)}</title></circle>')
                continue
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f'<polyline class="series" data-series="{_e(label)}" '
                         f'points="{coords}" fill="none" stroke="{color}" stroke-width="2">'
                         f'<title>{_e(label)}</title></polyline>')
        parts.append(f'<text x="{_LEFT + 10 + 180 * i}" y="{top + 2}" font-size="12" '
                     f'fill="{color}">■ {_e(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _directing_section(report: dict[str, Any], start: int, end: int) -> str:
    """导播 timeline: which source the students' view featured when, and every switch."""
    directing = report.get("directing") or {}
    switches = directing.get("switches") or []
    if not switches:
        return ""
    labels = {c["classroom_id"]: c["label"] for c in report["classrooms"]}
    rows: dict[str, list[list[int]]] = {}
    shown: list[list[int]] = []
    for i, sw in enumerate(switches):
        a = max(start, sw["ts_ms"])
        b = min(end, switches[i + 1]["ts_ms"] if i + 1 < len(switches) else end)
        if b <= a:
            continue
        rows.setdefault(sw["active"], []).append([a, b])
        if sw["courseware"]:
            shown.append([a, b])
    chart_rows: list[tuple[str, list[list[int]], list[int]]] = [
        (labels.get(cid, cid), spans, []) for cid, spans in rows.items()]
    if shown:
        chart_rows.append(("课件 courseware", shown, []))
    chart = _timeline_svg("directing", chart_rows, start, end)
    lines = "\n".join(
        f"<tr><td>{sw['lesson_s'] // 60:.0f}:{sw['lesson_s'] % 60:04.1f}</td>"
        f"<td>{_e(labels.get(sw['active'], sw['active']))}</td>"
        f"<td>{'✓' if sw['courseware'] else ''}</td><td>{_e(sw['reason'])}</td></tr>"
        for sw in switches)
    return f"""<h2>导播 <span class="en">Directing: who the students' view featured</span></h2>
{chart}
<table class="directing"><tr><th>时间 time</th><th>主画面 featured</th><th>课件 courseware</th>
<th>原因 reason</th></tr>
{lines}</table>"""


def _gaps_section(report: dict[str, Any], start: int) -> str:
    """The fail-overs the analytics missed (none: nothing)."""
    gaps = report.get("gaps") or []
    if not gaps:
        return ""
    items = "".join(
        f"<li>{(g['start_ms'] - start) / 1000:.1f}–{(g['end_ms'] - start) / 1000:.1f} s "
        f"({_e(g['reason'])}{'' if g['checkpoint'] else ', analytics before it lost'})</li>"
        for g in gaps)
    return f"""<h2>中断 <span class="en">Gaps (a mixer node stopped; the lesson resumed on
 another)</span></h2><ul class="gaps">{items}</ul>"""


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page (inline SVG charts, no scripts)."""
    les = report["lesson"]
    start, end = les["started_ms"], les["ended_ms"]
    rooms = report["classrooms"]
    speech = _timeline_svg("speech", [(c["label"], c["speech"]["segments"],
                                       c["hand_raises"]["ts_ms"]) for c in rooms], start, end)
    attendance = _timeline_svg("attendance", [(c["label"], c["present_intervals"], [])
                                              for c in rooms], start, end)
    def lines(key: str) -> list[tuple[str, list[list[tuple[int, float]]]]]:
        return [(c["label"], _segments(c["network"]["timeline"], key, c["present_intervals"],
                                       _sample_gap_ms(c["network"]["timeline"])))
                for c in rooms]

    latency = _line_svg("latency", lines("latency_ms"), start, end, "ms")
    rtt = _line_svg("rtt", lines("rtt_ms"), start, end, "ms")
    st = report["st"]
    def since_start(ms: int | None) -> str:
        return "–" if ms is None else f"{(ms - start) / 1000:.1f}"

    rows = "\n".join(
        f"<tr><td>{_e(c['name'])}</td><td>{_e(c['role'])}</td>"
        f"<td>{since_start(c.get('first_contact_ms'))}</td>"
        f"<td>{_e(c.get('contact_to_join_s') if c.get('contact_to_join_s') is not None else '–')}"
        f"</td><td>{c['present_s']}</td>"
        f"<td>{c['late_s']}</td><td>{c['early_leave_s']}</td>"
        f"<td>{c['attendance_ratio'] * 100:.0f}%</td><td>{c['reconnects']}</td>"
        f"<td>{c['speech']['talk_s']}</td><td>{c['speech']['turns']}</td>"
        f"<td>{c['hand_raises']['count']}</td><td>{_e(c['head_count']['median'])} / "
        f"{_e(c['head_count']['max'])}</td><td>{_e(c['network']['rtt_ms'])}</td>"
        f"<td>{_e(c['network']['loss_percent'])}</td><td>{_e(c['network']['latency_ms'])}</td>"
        "</tr>" for c in rooms)
    started = dt.datetime.fromtimestamp(start / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>课堂报告 Lesson report · {_e(les['lesson_id'])}</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2em;
       background: #fafafa; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
.en {{ color: #667; font-size: .85em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccd; padding: .25em .6em; }}
svg.chart {{ display: block; max-width: 100%; height: auto; }}
.codes {{ overflow-wrap: anywhere; }}
</style></head><body>
<h1>课堂报告 <span class="en">Lesson report</span> · {_e(les['subject'])} {_e(les['grade'])}
 · {_e(les['teacher'])}</h1>
<p>{_e(report['county'])} · {_e(les['lesson_id'])} · {started} ·
 {les['duration_s']:.0f} s · {'按课表 on timetable' if les['on_timetable']
                               else '课表外 off timetable'}</p>
<h2>出勤与互动 <span class="en">Attendance and interaction</span></h2>
<table><tr><th>课堂 Classroom</th><th>角色 Role</th><th>首次联系 first contact s</th>
<th>联系到连通 contact to media s</th><th>在线 s</th><th>迟到 late s</th>
<th>早退 early s</th><th>出勤率</th><th>重连</th><th>发言 talk s</th><th>轮次 turns</th>
<th>举手 hands</th><th>人数 heads (median / max)</th><th>RTT ms</th><th>丢包 loss %</th>
<th>延迟 latency ms</th></tr>
{rows}</table>
<p class="en legend" data-legend="attendance">出勤从媒体连通算起 {_e(report.get('attendance_rule',
                                                                    ATTENDANCE_RULE))}</p>
<p class="en">Head count: {_e(HEAD_COUNT_METHOD)}. Exchanges (main → receiving within
 {report['exchanges']['window_s']} s): {report['exchanges']['count']}, median response
 {_e(report['exchanges']['median_response_latency_ms'])} ms.</p>
<h2>谁在何时发言 <span class="en">Who spoke when (▲ hand raised)</span></h2>
{speech}
<h2>S-T 分析 <span class="en">S-T analysis, {st['interval_s']:g} s samples</span></h2>
{_st_svg(st)}
<p class="en">{_e(st['rule'])}</p><p class="codes"><code>{_e(st['codes'])}</code></p>
<h2>出勤 <span class="en">Attendance</span></h2>
{attendance}
<h2>延迟 <span class="en">Glass-to-glass latency over time</span></h2>
{latency}
<h2>往返时延 <span class="en">RTT over time</span></h2>
{rtt}
{_directing_section(report, start, end)}
{_gaps_section(report, start)}
</body></html>
"""


def write_report(report: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write :data:`REPORT_FILES` (report.json, report.csv, report-excel.csv,
    report.html) into ``folder``; their paths."""
    private_dir(folder, own=True)  # minors' data: owner only (0700 / 0600)
    report = finite_or_none(report)  # no NaN in the JSON, no "nan" coordinate in the page
    paths = {k: folder / name for k, name in REPORT_FILES.items()}
    texts = {"json": dumps_strict(report, ensure_ascii=False, indent=2),
             "csv": render_csv(report), "excel_csv": render_csv(report, excel=True),
             "html": render_html(report)}
    for key, path in paths.items():
        tmp = path.with_suffix(path.suffix + ".tmp")
        write_private(tmp, texts[key])  # bytes as given: no newline translation
        tmp.replace(path)  # readers never see a half-written file
    return {k: str(p.resolve()) for k, p in paths.items()}
