"""The mixer crashes mid-lesson and is restarted: the lesson resumes under the same id
(persisted in ``mixer.data_dir/lessons.json``), every classroom rejoins by itself, and the
recorder keeps recording the same lesson in new segments after a ``mixer_restart`` gap."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from syncclass.demo import LocalDeployment
from tests.county import County

pytestmark = pytest.mark.integration

MAIN, RURAL = "main-3-1", "hetou-3"


@pytest.fixture
def dep(tmp_path: Path, county: County) -> Iterator[LocalDeployment]:
    county.mixer["data_dir"] = str(tmp_path / "mixer-data")
    county.data["media"].update(width=640, height=360, bitrate_kbps=800, uplink_bitrate_kbps=500)
    county.synthetic_cameras(width=320, height=180, fps=15)
    county.data["analytics"] = {"enabled": False}
    d = LocalDeployment(county.write(), tmp_path)
    try:
        yield d
    except BaseException:
        d.write_logs(40)
        raise
    finally:
        d.stop_all()


def _peer(dep: LocalDeployment, cid: str) -> str | None:
    room = dep.mixer_status()["classrooms"].get(cid)
    return None if room is None else room["peer"]


def _frames(dep: LocalDeployment, cid: str) -> int:
    rx = dep.agent_status(cid)["reception"]
    return int(rx["frames_received"]) if rx else 0


@pytest.mark.timeout(90)
def test_mixer_restart_resumes_lesson(dep: LocalDeployment, tmp_path: Path) -> None:
    dep.start_mixer()
    dep.start_recorder()
    for cid in (MAIN, RURAL):
        dep.start_agent(cid, out_dir=tmp_path / "classrooms")
    dep.wait_for(lambda: {MAIN, RURAL} <= set(dep.mixer_status()["classrooms"]), 30,
                 "agents connected")
    status, lesson = dep.agent_command(MAIN, "start")
    assert status == 200, lesson
    lesson_id = lesson["lesson_id"]
    dep.wait_for(lambda: _peer(dep, MAIN) == _peer(dep, RURAL) == "connected", 30, "joined")
    time.sleep(4.0)
    persisted = json.loads((tmp_path / "mixer-data" / "lessons.json").read_text())
    assert [x["lesson_id"] for x in persisted["lessons"]] == [lesson_id]

    dep.stop("mixer", signal.SIGKILL)  # a crash: no goodbye, nothing flushed
    t_crash = time.monotonic()
    dep.start_mixer()
    t_up = time.monotonic()
    lessons = dep.mixer_status()["lessons"]
    assert [(x["lesson_id"], x["state"]) for x in lessons] == [(lesson_id, "live")]
    dep.wait_for(lambda: _peer(dep, MAIN) == _peer(dep, RURAL) == "connected", 20,
                 "every classroom rejoined", interval=0.1)
    rejoin_s = time.monotonic() - t_up
    f0 = {cid: _frames(dep, cid) for cid in (MAIN, RURAL)}
    time.sleep(4.0)
    f1 = {cid: _frames(dep, cid) for cid in (MAIN, RURAL)}
    for cid in (MAIN, RURAL):
        assert f1[cid] - f0[cid] >= 4 * 5, (cid, f0, f1)  # >= 5 fps after the restart
        assert dep.agent_status(cid)["lesson"]["lesson_id"] == lesson_id

    status, ended = dep.agent_command(MAIN, "end")
    assert status == 200 and ended["lesson_id"] == lesson_id, ended
    dep.wait_for(lambda: lesson_id in dep.recorder_status()["ready"], 60, "the recording")
    recording: dict[str, Any] = dep.recorder_status()["ready"][lesson_id]
    print("\nmixer restart:", json.dumps({"down_s": round(t_up - t_crash, 2),
                                          "rejoin_after_up_s": round(rejoin_s, 2),
                                          "recording": recording}, ensure_ascii=False))
    assert rejoin_s < 10.0
    assert not json.loads((tmp_path / "mixer-data" / "lessons.json").read_text())["lessons"]
    meta = json.loads(Path(recording["locations"]["metadata.json"]).read_text())
    # The recording continues across the crash in new segments of the same lesson: about
    # 4 s before, up to 4 s after, and the outage as a mixer_restart gap between them.
    assert meta["lesson_id"] == lesson_id, meta
    assert [g["reason"] for g in meta["gaps"]] == ["mixer_restart"], meta["gaps"]
    gap = meta["gaps"][0]
    before = [s for s in meta["segments"] if s["start_s"] < gap["start_s"]]
    after = [s for s in meta["segments"] if s["start_s"] >= gap["start_s"] + gap["duration_s"]]
    assert sum(s["duration_s"] for s in before) >= 3.0, meta["segments"]
    # After: 4 s of lesson, less the recorder's reconnect and the wait for a keyframe.
    assert sum(s["duration_s"] for s in after) >= 2.0, meta["segments"]
    assert meta["video_duration_s"] >= 8.0 + gap["duration_s"] - 1.5, meta
    with av.open(recording["locations"]["lesson.mp4"]) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    assert times[-1] - times[0] > gap["start_s"] + gap["duration_s"], (times[0], times[-1])
