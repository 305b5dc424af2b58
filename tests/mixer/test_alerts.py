"""Alert engine: hold time, severity, dropout, resolution (driven with explicit time)."""

from __future__ import annotations

from typing import Any

import pytest

from mixer.alerts import AlertEngine
from mixer.netstats import ClassroomHealth, grade
from syncclass.config import OpsThresholds

T = OpsThresholds()


def health(cid: str = "hetou-3", ts_ms: int = 0, **kw: Any) -> ClassroomHealth:
    h = ClassroomHealth(classroom_id=cid, name=cid, role="receiving", ts_ms=ts_ms,
                        state=kw.pop("state", "in_lesson"), lesson_id=kw.pop("lesson_id", "L1"),
                        **kw)
    h.level, h.problems = grade(h, T)
    return h


def test_grade_uses_g114_defaults() -> None:
    assert grade(health(latency_ms=120, fps_in=15), T) == ("ok", [])
    assert grade(health(latency_ms=151, fps_in=15), T) == ("amber", ["latency_amber"])
    assert grade(health(latency_ms=401, fps_in=15), T) == ("red", ["latency_red"])
    assert grade(health(loss_in_percent=1.5, fps_in=15), T) == ("red", ["loss"])
    assert grade(health(loss_out_percent=0.9, fps_in=15), T) == ("ok", [])
    level, problems = grade(health(latency_ms=200, loss_out_percent=3, fps_in=15), T)
    assert level == "red" and set(problems) == {"loss", "latency_amber"}
    assert grade(health(state="offline"), T) == ("offline", ["offline"])
    assert grade(health(state="offline", lesson_id=None), T) == ("ok", [])
    assert grade(health(state="waiting"), T) == ("red", ["not_in_lesson"])
    assert grade(health(frozen=True, fps_in=0), T) == ("red", ["frozen"])


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[tuple[str | None, str, dict[str, Any]]] = []

    def __call__(self, lesson_id: str | None, cid: str, data: dict[str, Any]) -> None:
        self.alerts.append((lesson_id, cid, data))


def test_alert_after_hold_then_resolved() -> None:
    rec = Recorder()
    eng = AlertEngine(T, hold_s=10, emit=rec)
    eng.update(0, {"hetou-3": health(latency_ms=500, ts_ms=0)})
    eng.update(5, {"hetou-3": health(latency_ms=520, ts_ms=5000)})
    assert rec.alerts == []  # not yet held long enough
    eng.update(10, {"hetou-3": health(latency_ms=510, ts_ms=10000)})
    assert len(rec.alerts) == 1
    lesson_id, cid, data = rec.alerts[0]
    assert (lesson_id, cid) == ("L1", "hetou-3")
    assert data["kind"] == "latency" and data["state"] == "firing"
    assert data["severity"] == "red" and data["threshold"] == 400 and data["value"] == 510
    assert data["held_s"] == 10
    eng.update(11, {"hetou-3": health(latency_ms=500, ts_ms=11000)})
    assert len(rec.alerts) == 1  # raised once, not every sample
    assert eng.firing == [("hetou-3", "latency")]
    eng.update(12, {"hetou-3": health(latency_ms=80, ts_ms=12000)})
    assert [a[2]["state"] for a in rec.alerts] == ["firing", "resolved"]
    assert eng.firing == []


def test_short_spike_raises_nothing() -> None:
    rec = Recorder()
    eng = AlertEngine(T, hold_s=10, emit=rec)
    for t in range(0, 30, 2):
        bad = t % 8 == 0  # over the threshold for one sample every 8 s
        eng.update(t, {"a": health("a", loss_in_percent=5 if bad else 0, ts_ms=t * 1000)})
    assert rec.alerts == []


def test_dropout_alert_keeps_lesson_and_resolves_on_rejoin() -> None:
    rec = Recorder()
    eng = AlertEngine(T, hold_s=3, emit=rec)
    eng.update(0, {"s": health("s", fps_in=15)})
    eng.update(1, {"s": health("s", state="offline")})
    eng.update(4, {"s": health("s", state="offline", ts_ms=4000)})
    assert len(rec.alerts) == 1
    assert rec.alerts[0][0] == "L1" and rec.alerts[0][2]["kind"] == "dropout"
    assert "dropout firing" in rec.alerts[0][2]["message"]
    eng.update(6, {"s": health("s", fps_in=15, ts_ms=6000)})
    assert rec.alerts[-1][2]["state"] == "resolved"


def test_alert_log_line(caplog: pytest.LogCaptureFixture) -> None:
    eng = AlertEngine(T, hold_s=0, emit=Recorder())
    with caplog.at_level("WARNING", logger="mixer.alerts"):
        eng.update(0, {"x": health("x", loss_in_percent=4.0, fps_in=15)})
    rec = next(r for r in caplog.records if r.name == "mixer.alerts")
    assert "ALERT classroom x: loss firing (4 %, threshold 1 %)" in rec.getMessage()
    assert rec.classroom_id == "x" and rec.lesson_id == "L1"  # type: ignore[attr-defined]


def test_json_log_lines_carry_lesson_and_classroom() -> None:
    import json
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from syncclass.cli import _setup_logging\n"
        "from mixer.alerts import AlertEngine\n"
        "from tests.mixer.test_alerts import health, T\n"
        "_setup_logging('info', True)\n"
        "AlertEngine(T, 0, lambda *a: None).update(0, {'x': health('x', loss_in_percent=4.0,"
        " fps_in=15)})\n"
        "logging.getLogger('mixer.media').warning('lesson %s: composition %d frame(s) late',"
        " 'math-g3-1', 2)\n"
        "logging.getLogger('edge_agent.agent').info('classroom %s: joining lesson %s',"
        " 'hetou-3', 'math-g3-1')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stderr.splitlines()]  # one JSON object per line
    alert, late, join = lines
    assert alert["level"] == "warning" and alert["classroom_id"] == "x"
    assert alert["lesson_id"] == "L1" and alert["alert"]["kind"] == "loss"
    assert late["lesson_id"] == "math-g3-1" and "classroom_id" not in late
    assert join["classroom_id"] == "hetou-3" and join["lesson_id"] == "math-g3-1"
