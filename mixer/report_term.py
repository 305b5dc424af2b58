"""Term figures for the education bureau: per paired school and subject, the synchronous
lessons held, their hours and the receiving classrooms' attendance, against the targets
in ``analytics.targets`` (e.g. at least 2 subjects and 10 lessons per subject per term).

Read from the lesson rows of :mod:`mixer.store`; every configured pairing is listed, also
one that held no lesson (that is the finding the bureau needs).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata
from typing import Any

from syncclass.config import CountyConfig

from .store import ReportStore

TERM_SCHEMA = "syncclass.term_report"
TERM_VERSION = 1
CSV_COLUMNS = ["pairing_id", "main_school", "receiving_schools", "subject", "lessons", "hours",
               "attendance_ratio", "meets_lessons_target", "meets_attendance_target",
               "pairing_subjects", "meets_subjects_target"]


def _epoch_ms(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.datetime.now().astimezone().tzinfo
                                   ).timestamp() * 1000)


def term_figures(config: CountyConfig, store: ReportStore, start: dt.date,
                 end: dt.date) -> dict[str, Any]:
    """Figures for lessons started from ``start`` through ``end`` (local dates, inclusive)."""
    if end < start:
        raise ValueError(f"term ends ({end}) before it starts ({start})")
    targets = config.analytics.targets
    lessons = store.lessons(_epoch_ms(start), _epoch_ms(end + dt.timedelta(days=1)))
    rows = store.classrooms([x["lesson_id"] for x in lessons])
    ratios: dict[str, list[float]] = {}
    for r in rows:
        if r["role"] == "receiving":
            ratios.setdefault(r["lesson_id"], []).append(float(r["attendance_ratio"]))
    pairings = []
    for p in config.pairings:
        main_school = config.classroom(p.main).school
        receiving_schools = sorted({config.classroom(c).school for c in p.receiving})
        mine = [x for x in lessons if x["pairing_id"] == p.id]
        subjects = []
        for subject in sorted({x["subject"] for x in mine}):
            held = [x for x in mine if x["subject"] == subject]
            att = [v for x in held for v in ratios.get(x["lesson_id"], [])]
            ratio = round(sum(att) / len(att), 4) if att else None
            subjects.append({
                "subject": subject,
                "lessons": len(held),
                "hours": round(sum(float(x["duration_s"]) for x in held) / 3600, 2),
                "attendance_ratio": ratio,
                "meets_lessons_target": len(held) >= targets.min_lessons_per_subject,
                "meets_attendance_target": ratio is not None
                and ratio >= targets.min_attendance_ratio,
            })
        ok_subjects = len(subjects) >= targets.min_subjects
        pairings.append({
            "pairing_id": p.id,
            "main_school": main_school,
            "main_school_name": config.school(main_school).name,
            "receiving_schools": receiving_schools,
            "lessons": len(mine),
            "hours": round(sum(float(x["duration_s"]) for x in mine) / 3600, 2),
            "subjects": subjects,
            "subject_count": len(subjects),
            "meets_subjects_target": ok_subjects,
            "meets_all_targets": ok_subjects and all(
                s["meets_lessons_target"] and s["meets_attendance_target"] for s in subjects),
        })
    return {
        "schema": TERM_SCHEMA,
        "version": TERM_VERSION,
        "county": config.county,
        "from_date": start.isoformat(),
        "to_date": end.isoformat(),
        "targets": targets.model_dump(),
        "pairings": pairings,
    }


def render_csv(fig: dict[str, Any], excel: bool = False) -> str:
    """One row per pairing and subject (a pairing without lessons: one row, no subject).
    ``excel``: for Microsoft Excel (a UTF-8 byte-order mark, so Excel on a Chinese
    Windows reads the text as UTF-8 and not as GBK, and CRLF line ends); write the text
    with ``encoding="utf-8"``."""
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\r\n" if excel else "\n")
    w.writeheader()
    for p in fig["pairings"]:
        base = {"pairing_id": p["pairing_id"], "main_school": p["main_school"],
                "receiving_schools": " ".join(p["receiving_schools"]),
                "pairing_subjects": p["subject_count"],
                "meets_subjects_target": p["meets_subjects_target"]}
        if not p["subjects"]:
            w.writerow({**base, "subject": "", "lessons": 0, "hours": 0.0,
                        "attendance_ratio": "", "meets_lessons_target": False,
                        "meets_attendance_target": False})
        for s in p["subjects"]:
            w.writerow({**base, **{k: s[k] for k in ("subject", "lessons", "hours",
                                                     "attendance_ratio", "meets_lessons_target",
                                                     "meets_attendance_target")}})
    return ("\ufeff" if excel else "") + out.getvalue()


def display_width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide and fullwidth characters (汉字,
    fullwidth punctuation) take two, combining marks none, others one."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def pad(text: str, width: int, align: str = "<") -> str:
    """``text`` padded with spaces to ``width`` terminal columns (``<`` left, ``>``
    right); longer text is kept whole."""
    fill = " " * max(0, width - display_width(text))
    return text + fill if align == "<" else fill + text


def _subject_status(s: dict[str, Any], t: dict[str, Any]) -> str:
    """Which of a subject's targets are met and which not, with the figures."""
    parts = []
    lessons_ok = s["meets_lessons_target"]
    parts.append(f"lessons {'met' if lessons_ok else 'NOT MET'} "
                 f"({s['lessons']} {'>=' if lessons_ok else '<'} "
                 f"{t['min_lessons_per_subject']})")
    if s["attendance_ratio"] is None:
        parts.append("attendance NOT MET (no receiving classroom attended)")
    else:
        att_ok = s["meets_attendance_target"]
        parts.append(f"attendance {'met' if att_ok else 'NOT MET'} "
                     f"({s['attendance_ratio']:.0%} {'>=' if att_ok else '<'} "
                     f"{t['min_attendance_ratio']:.0%})")
    return ", ".join(parts)


def _pairing_status(p: dict[str, Any], t: dict[str, Any]) -> str:
    """A pairing's targets: which are met and which are not."""
    met: list[str] = []
    not_met: list[str] = []
    subjects = f"subjects ({p['subject_count']} of >= {t['min_subjects']})"
    (met if p["meets_subjects_target"] else not_met).append(subjects)
    for s in p["subjects"]:
        (met if s["meets_lessons_target"] else not_met).append(
            f"{s['subject']} lessons ({s['lessons']} of >= {t['min_lessons_per_subject']})")
        (met if s["meets_attendance_target"] else not_met).append(
            f"{s['subject']} attendance")
    if not p["subjects"]:
        not_met.append("lessons (none held)")
    if not not_met:
        return "all targets met: " + ", ".join(met)
    return (f"met: {', '.join(met) if met else 'none'}; NOT MET: {', '.join(not_met)}")


def render_table(fig: dict[str, Any]) -> str:
    """A plain-text table for the terminal, aligned by display width (CJK subjects and
    names take two columns a character)."""
    t = fig["targets"]
    rows = [("pairing", "subject", "lessons", "hours", "attend.", "status")]
    notes: dict[int, str] = {}
    for p in fig["pairings"]:
        if not p["subjects"]:
            rows.append((p["pairing_id"], "-", "0", "0.00", "-", "NOT MET (no lessons)"))
        for s in p["subjects"]:
            att = "-" if s["attendance_ratio"] is None else f"{s['attendance_ratio']:.0%}"
            rows.append((p["pairing_id"], s["subject"], str(s["lessons"]), f"{s['hours']:.2f}",
                         att, _subject_status(s, t)))
        notes[len(rows) - 1] = _pairing_status(p, t)
    widths = [max(display_width(r[i]) for r in rows) + 2 for i in range(5)]
    aligns = ["<", "<", ">", ">", ">"]
    lines = [f"{fig['county']}: synchronous lessons {fig['from_date']} .. {fig['to_date']} "
             f"(targets: >= {t['min_subjects']} subjects, >= {t['min_lessons_per_subject']} "
             f"lessons per subject, attendance >= {t['min_attendance_ratio']:.0%})"]
    for i, row in enumerate(rows):
        cells = "".join(pad(c, w - (2 if a == "<" else 0), a) + ("  " if a == "<" else "")
                        for c, w, a in zip(row[:5], widths, aligns, strict=True))
        lines.append(f"{cells}  {row[5]}".rstrip())
        if i in notes:
            lines.append(f"{pad('', widths[0])}{notes[i]}")
    return "\n".join(lines) + "\n"
