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


def render_csv(fig: dict[str, Any]) -> str:
    """One row per pairing and subject (a pairing without lessons: one row, no subject)."""
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
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
    return out.getvalue()


def render_table(fig: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    t = fig["targets"]
    lines = [f"{fig['county']}: synchronous lessons {fig['from_date']} .. {fig['to_date']} "
             f"(targets: >= {t['min_subjects']} subjects, >= {t['min_lessons_per_subject']} "
             f"lessons per subject, attendance >= {t['min_attendance_ratio']:.0%})",
             f"{'pairing':<22}{'subject':<10}{'lessons':>8}{'hours':>8}{'attend.':>9}  status"]
    for p in fig["pairings"]:
        if not p["subjects"]:
            lines.append(f"{p['pairing_id']:<22}{'-':<10}{0:>8}{0.0:>8.2f}{'-':>9}  NOT MET "
                         "(no lessons)")
        for s in p["subjects"]:
            att = "-" if s["attendance_ratio"] is None else f"{s['attendance_ratio']:.0%}"
            ok = s["meets_lessons_target"] and s["meets_attendance_target"]
            lines.append(f"{p['pairing_id']:<22}{s['subject']:<10}{s['lessons']:>8}"
                         f"{s['hours']:>8.2f}{att:>9}  {'met' if ok else 'NOT MET'}")
        lines.append(f"{'':<22}{p['subject_count']} subject(s): "
                     f"{'met' if p['meets_subjects_target'] else 'NOT MET'}; all targets "
                     f"{'met' if p['meets_all_targets'] else 'NOT MET'}")
    return "\n".join(lines) + "\n"
