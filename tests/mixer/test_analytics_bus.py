"""Analytics on the mixer's event bus, in process: lesson events → report → report_ready."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mixer.analytics import Analytics, raise_hand
from mixer.core import Mixer
from syncclass.config import default_config_path, load_config
from syncclass.errors import AuthError, InvalidStateError

MAIN, A, B = "main-3-1", "hetou-3", "shanping-3"


def read_report(data: dict[str, str]) -> dict[str, Any]:
    assert Path(data["html"]).is_file() and Path(data["csv"]).is_file()
    return dict(json.loads(Path(data["json"]).read_text(encoding="utf-8")))


def beside(folder: Path) -> bool:
    return all((folder / f"report.{k}").is_file() for k in ("json", "csv", "html"))


async def test_lesson_events_to_report_ready(tmp_path: Path) -> None:
    base = load_config(default_config_path())
    config = base.model_copy(update={
        "mixer": base.mixer.model_copy(update={"data_dir": str(tmp_path)}),
        "analytics": base.analytics.model_copy(update={"head_count_interval_s": 0}),
    })
    mixer = Mixer(config)
    analytics = Analytics(mixer)
    analytics.start()
    try:
        with pytest.raises(InvalidStateError):
            raise_hand(mixer, A)
        mixer.emit("classroom_connected", None, A)  # A's agent says hello before the lesson
        lesson = mixer.lessons.start(MAIN)
        mixer.emit("classroom_connected", lesson.lesson_id, B)
        with pytest.raises(AuthError):
            raise_hand(mixer, MAIN)
        mixer.emit("classroom_joined", lesson.lesson_id, A)
        raise_hand(mixer, A)
        raise_hand(mixer, A)  # a double press within the debounce counts once
        la = analytics.lessons[lesson.lesson_id]
        view = next(v for v in la.media.views.values() if v.config.shown_to == "main")  # type: ignore[union-attr]
        assert view.compositor.badge(A) == "HAND UP"
        await asyncio.sleep(0.3)
        mixer.emit("classroom_left", lesson.lesson_id, A, reason="leave")
        mixer.lessons.end(MAIN)
        await asyncio.wait_for(la.done.wait(), 20)
        ready = [e for e in mixer.events.history if e.name == "report_ready"]
        assert len(ready) == 1 and ready[0].lesson_id == lesson.lesson_id
        data = ready[0].data
        report = read_report(data)
        a = next(c for c in report["classrooms"] if c["classroom_id"] == A)
        assert a["hand_raises"]["count"] == 1
        assert [s["reason"] for s in a["sessions"]] == ["leave"]
        assert a["sessions"][0]["leave_ms"] - a["sessions"][0]["join_ms"] >= 250
        assert data["url"] == f"/reports/{lesson.lesson_id}/"
        # The agent's first contact (hello) is recorded beside the media join.
        hello_a = next(e.ts_ms for e in mixer.events.history
                       if e.name == "classroom_connected" and e.classroom_id == A)
        assert a["first_contact_ms"] == hello_a and a["contact_to_join_s"] is not None
        b = next(c for c in report["classrooms"] if c["classroom_id"] == B)
        assert b["first_contact_ms"] is not None and b["contact_to_join_s"] is None
        assert report["recording_dir"] is None
        # A recording announced after the report: the report is copied beside it.
        rec = tmp_path / "rec" / lesson.lesson_id
        mixer.emit("recording_ready", lesson.lesson_id, MAIN, mp4=str(rec / "lesson.mp4"))
        for _ in range(100):
            if beside(rec):
                break
            await asyncio.sleep(0.05)
        assert beside(rec)
        # ... and says where the recording is, there and in the mixer's copy (it was
        # written before the recording was ready).
        for folder in (rec, Path(data["json"]).parent):
            copied = json.loads((folder / "report.json").read_text(encoding="utf-8"))
            assert copied["recording_dir"] == str(rec)
        # A later mixer finds the finished report from its folder.
        again = Analytics(Mixer(config))
        found = again.load_finished(lesson.lesson_id)
        assert found is not None and found.report_paths is not None
        assert again.load_finished("../etc") is None
        await again.aclose()
    finally:
        await mixer.aclose()
        await analytics.aclose()
